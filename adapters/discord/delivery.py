"""Posting to Discord from a process that receives nothing: how a worker delivers turns.

Discord's REST API takes a bot's posts, edits, uploads and typing with the bot token alone, so a
worker logs in over HTTP and never opens a gateway connection: it holds no shard, and any number
of workers can post for one bot. Posts go through the same core and backend as the adapter's
(adapters/discord/app.py), on partial objects built from ids, so an empty cache is enough.
"""

from __future__ import annotations

import discord

from adapters.backoff import Report
from adapters.discord.app import discord_core
from adapters.discord.backend import ALLOWED_MENTIONS, DiscordBackend
from adapters.discord.login import DiscordStartError, log_in
from adapters.discord.settings import DiscordSettings
from bot.app import App


class DiscordDelivery:
    def __init__(self, settings: DiscordSettings, app: App, *, progress_interval: float = 5.0,
                 say: Report | None = None) -> None:
        if settings.token is None:
            raise DiscordStartError("DISCORD_TOKEN is not set; a worker posts to Discord with the bot "
                                    "token (Developer Portal → Bot → Reset Token).")
        self.settings, self._say = settings, say
        # A plain client, not the adapter's: its login() runs the client's setup_hook, which for
        # the adapter's would ask for the gateway and register the slash commands. Intents only
        # matter to a gateway connection; `guilds` just spares a warning at every start.
        self.client = discord.Client(intents=discord.Intents(guilds=True),
                                     allowed_mentions=ALLOWED_MENTIONS, max_messages=None)
        self.backend = DiscordBackend(self.client)
        # The worker's own pipeline runs the turns; this core only posts them.
        self.core = discord_core(app, self.backend, settings, progress_interval=progress_interval,
                                 work=False)
        self._previous_base = discord.http.Route.BASE

    async def start(self) -> str:
        """Log in over REST (who the bot is); no gateway. While Discord cannot be reached this
        retries with backoff, one line per retry; a token Discord refuses is a sentence.
        Cancelling it (a stop) ends it at once."""
        await log_in(self.client, self.settings, say=self._say)
        return f"Discord delivery (REST only, as {self.client.user})"

    async def aclose(self) -> None:
        await self.core.aclose()
        await self.client.close()  # its HTTP session: there is no gateway connection to close
        discord.http.Route.BASE = self._previous_base
