"""`threadedit run`: start every configured chat adapter on one shared core, until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Protocol

from adapters.discord.settings import DiscordSettings
from adapters.slack.settings import SlackSettings
from bot.app import open_app
from bot.config import ConfigError, Settings, load_settings_of


class Adapter(Protocol):
    async def start(self) -> str: ...

    async def aclose(self) -> None: ...


def configured_slack() -> SlackSettings | None:
    slack = load_settings_of(SlackSettings)
    if slack.bot_token is None:
        if slack.app_token or slack.signing_secret:
            raise ConfigError("SLACK_APP_TOKEN or SLACK_SIGNING_SECRET is set but SLACK_BOT_TOKEN "
                              "is not; the bot token is needed in both modes.")
        return None
    if not slack.configured:
        raise ConfigError("SLACK_BOT_TOKEN is set but neither SLACK_APP_TOKEN (Socket Mode) nor "
                          "SLACK_SIGNING_SECRET (HTTP mode) is.")
    return slack


def configured_discord() -> DiscordSettings | None:
    discord_settings = load_settings_of(DiscordSettings)
    return discord_settings if discord_settings.token is not None else None


async def run(settings: Settings) -> int:
    slack, discord_settings = configured_slack(), configured_discord()
    if slack is None and discord_settings is None:
        print("No chat adapter is configured: set SLACK_BOT_TOKEN with SLACK_APP_TOKEN or "
              "SLACK_SIGNING_SECRET, or DISCORD_TOKEN (see README). Without either, try "
              "`threadedit playground` or the CLI: threadedit edit \"a lighthouse at dusk\".",
              file=sys.stderr)
        return 2
    # Handlers first: a SIGTERM while adapters start still ends in a clean shutdown.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with open_app(settings) as app:
        adapters: list[Adapter] = []
        started: list[str] = []
        try:
            if slack is not None:
                from adapters.slack.app import SlackAdapter

                adapters.append(SlackAdapter(slack, app))
                started.append(await adapters[-1].start())
            if discord_settings is not None:
                from adapters.discord.app import DiscordAdapter

                adapters.append(DiscordAdapter(discord_settings, app))
                started.append(await adapters[-1].start())
        except ConfigError:  # e.g. a token the platform refused: close what did start, then say so
            for adapter in reversed(adapters):
                await adapter.aclose()
            raise
        print(f"threadedit: started {' and '.join(started)}; engine {app.engine.name}.",
              file=sys.stderr)
        await stop.wait()
        for adapter in reversed(adapters):
            await adapter.aclose()
    return 0
