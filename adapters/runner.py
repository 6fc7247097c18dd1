"""`threadedit run`: start every configured chat adapter on one shared core, until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from adapters.slack.settings import SlackSettings
from bot.app import open_app
from bot.config import ConfigError, Settings


def configured_slack() -> SlackSettings | None:
    slack = SlackSettings()
    if slack.bot_token is None:
        if slack.app_token or slack.signing_secret:
            raise ConfigError("SLACK_APP_TOKEN or SLACK_SIGNING_SECRET is set but SLACK_BOT_TOKEN "
                              "is not; the bot token is needed in both modes.")
        return None
    if not slack.configured:
        raise ConfigError("SLACK_BOT_TOKEN is set but neither SLACK_APP_TOKEN (Socket Mode) nor "
                          "SLACK_SIGNING_SECRET (HTTP mode) is.")
    return slack


async def run(settings: Settings) -> int:
    slack = configured_slack()
    if slack is None:
        print("No chat adapter is configured: set SLACK_BOT_TOKEN with SLACK_APP_TOKEN or "
              "SLACK_SIGNING_SECRET (see README). Discord and the playground are coming; "
              "meanwhile the CLI works: threadedit edit \"a lighthouse at dusk\".", file=sys.stderr)
        return 2
    from adapters.slack.app import SlackAdapter

    async with open_app(settings) as app:
        adapter = SlackAdapter(slack, app)
        print(f"threadedit: started {await adapter.start()}; engine {app.engine.name}.",
              file=sys.stderr)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await adapter.aclose()
    return 0
