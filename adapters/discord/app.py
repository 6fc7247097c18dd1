"""Building and running the Discord adapter on the shared core."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import discord

from adapters.backoff import network_reason
from adapters.discord.backend import DiscordBackend
from adapters.discord.client import ShardedThreadeditClient, ThreadeditClient
from adapters.discord.listeners import DiscordListeners
from adapters.discord.login import DiscordStartError, log_in
from adapters.discord.settings import DiscordSettings
from bot.access import AccessPolicy
from bot.app import App, make_chat_core
from bot.chat.core import ChatCore

log = logging.getLogger(__name__)

__all__ = ["DiscordAdapter", "DiscordStartError", "discord_core"]


def discord_core(app: App, backend: DiscordBackend, settings: DiscordSettings, *,
                 progress_interval: float, work: bool = True) -> ChatCore:
    """The core Discord's posts go through, with the settings' roles and channels: one recipe for
    the adapter and for a worker that only posts (adapters.discord.delivery)."""
    return make_chat_core(
        app, backend, AccessPolicy(approver_roles=settings.approver_roles,
                                   settings_roles=settings.settings_roles),
        allowed_channels=settings.allowed_channels or None, progress_interval=progress_interval,
        work=work)


class _OneLineReconnects(logging.Filter):
    """discord.py retries a failed gateway connection itself, logging a full traceback each
    time ('Attempting a reconnect in %.2fs'); make that the same one line as our own retries."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Attempting a reconnect in %.2fs" and record.exc_info:
            exc = record.exc_info[1]
            reason = (network_reason(exc) if exc is not None else None) or type(exc).__name__
            record.msg = "Discord's gateway connection failed (%s); retrying in %.1f s."
            record.args = (reason, *(record.args or (0.0,)))  # type: ignore[misc]
            record.exc_info = record.exc_text = None
        return True


logging.getLogger("discord.client").addFilter(_OneLineReconnects())


class DiscordAdapter:
    def __init__(self, settings: DiscordSettings, app: App, *, progress_interval: float = 5.0,
                 work: bool = True) -> None:
        assert settings.token is not None
        self.settings = settings
        # Unsharded: one connection, as before. Sharded: these shards (all when no ids are given).
        kind, shards = ThreadeditClient, {}
        if settings.shard_count is not None:
            kind, shards = ShardedThreadeditClient, {"shard_count": settings.shard_count,
                                                     "shard_ids": list(settings.shard_ids) or None}
        self.client = kind(api_base=settings.api_base, message_content=settings.message_content,
                           deliveries=app.deliveries, registers_commands=settings.runs_shard_zero, **shards)
        self.backend = DiscordBackend(self.client)
        self.core = discord_core(app, self.backend, settings, progress_interval=progress_interval,
                                 work=work)
        self.client.listeners = DiscordListeners(self.client, self.core)
        self._task: asyncio.Task[None] | None = None
        self._previous_base = discord.http.Route.BASE
        self._previous_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY

    async def start(self) -> str:
        """Log in, connect and wait until the gateway is ready; resume unfinished turns.

        While Discord cannot be reached this retries with backoff, one line per retry; a token
        Discord refuses is a sentence. Cancelling it (a stop) ends it at once."""
        await log_in(self.client, self.settings)
        self._task = asyncio.create_task(self._connect())
        ready = asyncio.create_task(self.client.wait_until_ready())
        try:
            await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not self.client.is_ready():
            exc = self._task.exception()
            raise DiscordStartError(str(exc) if exc else "The Discord connection closed at start.")
        await self.core.start()
        mode = ("" if self.settings.message_content
                else "; message content intent off: replies must mention the bot")
        shards = f"; {self.settings.shards_text}" if self.settings.sharded else ""
        return f"Discord (as {self.client.user}{shards}{mode})"

    async def _connect(self) -> None:
        try:
            await self.client.connect(reconnect=True)
        except discord.PrivilegedIntentsRequired:
            raise DiscordStartError(
                "Discord refused the message content intent: enable it in the Developer Portal "
                "(Bot → Privileged Gateway Intents) or set DISCORD_MESSAGE_CONTENT=false.") from None

    async def aclose(self) -> None:
        await self.core.pending.aclose()  # while Discord can still be told about what is given up
        await self.client.close()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._task
        await self.core.aclose()
        discord.http.Route.BASE = self._previous_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._previous_gateway
