"""Building and running the Discord adapter on the shared core."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import discord

from adapters.discord.backend import DiscordBackend
from adapters.discord.client import ThreadeditClient
from adapters.discord.listeners import DiscordListeners
from adapters.discord.settings import DiscordSettings
from bot.access import AccessPolicy
from bot.app import App, make_chat_core
from bot.config import ConfigError

log = logging.getLogger(__name__)


class DiscordStartError(ConfigError):
    """The bot could not log in or connect; the message is one sentence for the operator."""


class DiscordAdapter:
    def __init__(self, settings: DiscordSettings, app: App, *, progress_interval: float = 5.0) -> None:
        assert settings.token is not None
        self.settings = settings
        self.resume_max_age = app.settings.resume_max_age_seconds
        self.client = ThreadeditClient(api_base=settings.api_base,
                                       message_content=settings.message_content, store=app.store)
        self.backend = DiscordBackend(self.client)
        self.core = make_chat_core(
            app, self.backend, AccessPolicy(approver_roles=settings.approver_roles,
                                            settings_roles=settings.settings_roles),
            allowed_channels=settings.allowed_channels or None, progress_interval=progress_interval)
        self.client.listeners = DiscordListeners(self.client, self.core)
        self._task: asyncio.Task[None] | None = None
        self._previous_base = discord.http.Route.BASE
        self._previous_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY

    async def start(self) -> str:
        """Log in, connect and wait until the gateway is ready; resume unfinished turns."""
        assert self.settings.token is not None
        # discord.py reads its REST base from a class attribute: one API base per process.
        discord.http.Route.BASE = self.settings.api_base
        try:
            await self.client.login(self.settings.token.get_secret_value())
        except discord.LoginFailure:
            raise DiscordStartError("Discord refused DISCORD_TOKEN; copy the bot token again from "
                                    "the Developer Portal (Bot → Reset Token).") from None
        self._task = asyncio.create_task(self._connect())
        ready = asyncio.create_task(self.client.wait_until_ready())
        await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            exc = self._task.exception()
            raise DiscordStartError(str(exc) if exc else "The Discord connection closed at start.")
        await self.core.start(self.resume_max_age)
        mode = ("" if self.settings.message_content
                else "; message content intent off: replies must mention the bot")
        return f"Discord (as {self.client.user}{mode})"

    async def _connect(self) -> None:
        try:
            await self.client.connect(reconnect=True)
        except discord.PrivilegedIntentsRequired:
            raise DiscordStartError(
                "Discord refused the message content intent: enable it in the Developer Portal "
                "(Bot → Privileged Gateway Intents) or set DISCORD_MESSAGE_CONTENT=false.") from None

    async def aclose(self) -> None:
        await self.client.close()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._task
        await self.core.aclose()
        discord.http.Route.BASE = self._previous_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._previous_gateway
