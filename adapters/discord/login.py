"""Logging in to Discord over REST with the bot token, for the adapter and for a worker that only
posts: Discord unreachable is one line per retry with backoff, a refused token one sentence."""

from __future__ import annotations

from urllib.parse import urlsplit

import discord

from adapters.backoff import Report, network_reason, until_reachable
from adapters.discord.settings import DISCORD_API, DiscordSettings
from bot.config import ConfigError


class DiscordStartError(ConfigError):
    """The bot could not log in or connect; the message is one sentence for the operator."""


def host_of(api_base: str) -> str:
    return urlsplit(api_base).netloc or api_base


def unreachable(exc: Exception, api_base: str) -> str | None:
    """The sentence for a login failure worth retrying (Discord unreachable or in trouble), else None."""
    if (reason := network_reason(exc)) is not None:
        return (f"Discord is unreachable at {host_of(api_base)} ({reason}); check the network, "
                "a proxy, or DISCORD_API_BASE")
    if isinstance(exc, discord.DiscordServerError):
        return f"Discord answered HTTP {exc.status} at {host_of(api_base)}"
    return None


async def log_in(client: discord.Client, settings: DiscordSettings, *, say: Report | None = None) -> None:
    """`client.login` (REST: the bot's user and application, no gateway) against the configured API
    base, retried while Discord cannot be reached. Cancelling it (a stop) ends it at once."""
    assert settings.token is not None
    token = settings.token.get_secret_value()
    # discord.py reads its REST base from a class attribute: one API base per process.
    discord.http.Route.BASE = settings.api_base

    async def attempt() -> None:
        try:
            await client.login(token)
        except discord.LoginFailure:
            raise DiscordStartError("Discord refused DISCORD_TOKEN; copy the bot token again from "
                                    "the Developer Portal (Bot → Reset Token).") from None
        except Exception as exc:
            # discord.py opens a new HTTP session (on its connector) at every login: close this
            # one, and let the next login make a new connector, so nothing is left unclosed.
            await client.http.close()
            client.http.connector = discord.utils.MISSING
            if unreachable(exc, settings.api_base) is None and isinstance(exc, discord.HTTPException):
                raise DiscordStartError(
                    f"Discord answered HTTP {exc.status} at {host_of(settings.api_base)} while logging "
                    f"in; check DISCORD_API_BASE (the default is {DISCORD_API}).") from None
            raise

    await until_reachable(attempt, lambda exc: unreachable(exc, settings.api_base), say=say)
