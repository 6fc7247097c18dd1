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


async def run(settings: Settings, *, work: bool = True) -> int:
    """The chat adapters, until stopped. `work=False` (`run --no-worker`): adapters only; they
    record turns and answer at once, and `threadedit worker` processes run the turns."""
    slack, discord_settings = configured_slack(), configured_discord()
    if slack is None and discord_settings is None:
        print("No chat adapter is configured: set SLACK_BOT_TOKEN with SLACK_APP_TOKEN or "
              "SLACK_SIGNING_SECRET, or DISCORD_TOKEN (see README). Without either, try "
              "`threadedit playground` or the CLI: threadedit edit \"a lighthouse at dusk\".",
              file=sys.stderr)
        return 2
    # Handlers first: a stop while adapters start (or wait for their platform) is a clean stop too.
    stop = stop_on_signals()
    async with open_app(settings) as app:
        adapters: list[Adapter] = []
        try:
            if slack is not None:
                from adapters.slack.app import SlackAdapter

                adapters.append(SlackAdapter(slack, app, work=work))
            if discord_settings is not None:
                from adapters.discord.app import DiscordAdapter

                adapters.append(DiscordAdapter(discord_settings, app, work=work))
            started = await start_unless_stopped(adapters, stop)
            if started is not None:
                runs = (f"engine {app.engine.name}" if work
                        else "no worker: `threadedit worker` processes run the turns")
                print(f"threadedit: started {' and '.join(started)}; {runs}.", file=sys.stderr, flush=True)
                await stop.wait()
        finally:  # also after a refused token: close what was opened, then say so
            for adapter in reversed(adapters):
                await adapter.aclose()
    return 0


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT (Ctrl-C) or SIGTERM (systemd, docker, honcho): a clean stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def start_unless_stopped(adapters: list[Adapter], stop: asyncio.Event) -> list[str] | None:
    """Start every adapter at once (one platform being down must not hold up the other); None
    when a stop came first, in which case the starts still running are cancelled."""
    starting = asyncio.create_task(_start_all(adapters))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
    if starting.cancelled():
        return None
    return starting.result()  # raises the ConfigError of a refused token


async def _start_all(adapters: list[Adapter]) -> list[str]:
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(adapter.start()) for adapter in adapters]
    except BaseExceptionGroup as group_error:
        # The first refusal is the one to tell; the group has cancelled the other starts.
        first = group_error.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return [task.result() for task in tasks]
