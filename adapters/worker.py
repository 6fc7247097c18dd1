"""`threadedit worker`: a process that runs turns for the whole fleet and receives nothing.

It takes queued turns of every platform it can post to from the store's queue (bot/leases.py)
under the fleet's cap, calls the model, and posts progress and results through each platform's
own HTTP API: Slack's Web API with SLACK_BOT_TOKEN, Discord's REST API with DISCORD_TOKEN (no
gateway connection, no shard). Playground turns need no post (the page reads the store), so every
worker takes those too. The CLI runs its own turns. On SIGTERM or Ctrl-C it stops at once and
gives its leases back, so another worker takes the turns it was running.
"""

from __future__ import annotations

import logging
import os
import sys

from adapters.discord.settings import DiscordSettings
from adapters.runner import Adapter, start_unless_stopped, stop_on_signals
from adapters.slack.settings import SlackSettings
from bot.app import App, open_app, turn_pipeline
from bot.chat.core import ChatCore
from bot.config import Settings, load_settings_of
from bot.domain import Turn
from bot.pipeline import TurnListener, TurnPipeline
from bot.results import TurnResult

log = logging.getLogger(__name__)

PLAYGROUND = "playground"


class Delivery(Adapter):
    core: ChatCore


class _PageReadsTheStore:
    """A playground turn's listener: the page polls the store, so there is only a log line."""

    async def turn_started(self, turn: Turn) -> None:
        log.debug("turn %s of session %s started", turn.id, turn.session_id)

    async def turn_finished(self, result: TurnResult) -> None:
        log.info("turn %s of session %s finished: %s", result.turn_id, result.session_id, result.status)


def configured_deliveries(app: App) -> list[Delivery]:
    """A delivery for each platform whose bot token is set: all a worker needs to post there."""
    found: list[Delivery] = []
    slack = load_settings_of(SlackSettings)
    if slack.bot_token is not None:
        from adapters.slack.delivery import SlackDelivery

        found.append(SlackDelivery(slack, app))
    discord_settings = load_settings_of(DiscordSettings)
    if discord_settings.token is not None:
        from adapters.discord.delivery import DiscordDelivery

        found.append(DiscordDelivery(discord_settings, app))
    return found


def yield_cpu(niceness: int) -> int:
    """Lower this process's CPU priority to `niceness` (never raise it: that needs privileges);
    the niceness it now has. Called before any thread starts: on Linux a niceness is a thread's,
    and the threads started later (the store's, the image checks') inherit it."""
    if not hasattr(os, "nice"):
        return 0
    current = os.nice(0)
    if niceness > current:
        current = os.nice(niceness - current)
    return current


async def work(settings: Settings) -> int:
    stop = stop_on_signals()  # first: a stop while deliveries start is a clean stop too
    niceness = yield_cpu(settings.worker_niceness)
    async with open_app(settings) as app:
        deliveries = configured_deliveries(app)
        pipeline: TurnPipeline | None = None
        try:
            started = await start_unless_stopped(list(deliveries), stop)
            if started is None:
                return 0
            listeners: dict[str, TurnListener] = {d.core.platform: d.core for d in deliveries}
            listeners[PLAYGROUND] = _PageReadsTheStore()
            pipeline = turn_pipeline(app, listeners=listeners)
            await pipeline.show_unshown()  # what a stop or a dead worker left unshown
            pipeline.start()
            print(f"threadedit worker: taking turns of {', '.join(sorted(listeners))}"
                  f"{''.join(f'; {s}' for s in started)}; engine {app.engine.name}; at most "
                  f"{settings.max_concurrency} model calls at once across the fleet; CPU niceness "
                  f"{niceness}.",
                  file=sys.stderr, flush=True)
            await stop.wait()
        finally:
            if pipeline is not None:
                await pipeline.aclose()  # its leases given back: another worker takes the turns
            for delivery in reversed(deliveries):
                await delivery.aclose()
    return 0
