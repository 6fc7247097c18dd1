"""Building and serving the Slack app: Socket Mode with an app token, else HTTP mode."""

from __future__ import annotations

import logging

from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.backend import SlackBackend
from adapters.slack.files import SlackFiles
from adapters.slack.identity import BotIdentity
from adapters.slack.listeners import register
from adapters.slack.settings import SlackSettings
from adapters.slack.startup import SlackStartError, SocketModeHandler, check_bot_token, check_token_kinds
from bot.access import AccessPolicy
from bot.app import App, make_chat_core
from bot.chat.core import ChatCore

log = logging.getLogger(__name__)


def web_client(settings: SlackSettings) -> AsyncWebClient:
    assert settings.bot_token is not None
    return AsyncWebClient(
        token=settings.bot_token.get_secret_value(),
        base_url=settings.api_url,
        # 429s wait for Retry-After; a dropped connection is tried once more.
        retry_handlers=[AsyncConnectionErrorRetryHandler(),
                        AsyncRateLimitErrorRetryHandler(max_retry_count=3)],
    )


def slack_core(app: App, backend: SlackBackend, settings: SlackSettings, *,
               progress_interval: float, work: bool = True) -> ChatCore:
    """The core Slack's posts go through, with the settings' approvers and channels: one recipe for
    the adapter and for a worker that only posts (adapters.slack.delivery)."""
    return make_chat_core(
        app, backend, AccessPolicy(approvers=settings.approvers or None,
                                   settings_changers=settings.settings_changers or None),
        allowed_channels=settings.allowed_channels or None, progress_interval=progress_interval,
        work=work)


class _DropTokenSkippedWarning(logging.Filter):
    # AsyncApp reads SLACK_BOT_TOKEN itself and warns that it is unused when a client is given
    # too, and that the client's token is "ignored" when `authorize` is given; we give both on
    # purpose (the client: our base URL and retry handlers; `authorize`: the start-up's auth.test
    # answer, with the same token), so the warnings are noise.
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "`token` will be unused" not in message and "will be ignored" not in message


BOLT_LOG = logging.getLogger("adapters.slack.bolt")
BOLT_LOG.addFilter(_DropTokenSkippedWarning())


class SlackAdapter:
    def __init__(self, settings: SlackSettings, app: App, *, progress_interval: float = 5.0,
                 files: SlackFiles | None = None, work: bool = True) -> None:
        assert settings.bot_token is not None
        check_token_kinds(settings)
        self.settings = settings
        client = web_client(settings)
        self.backend = SlackBackend(client)
        self.core = slack_core(app, self.backend, settings, progress_interval=progress_interval,
                               work=work)
        self.files = files or SlackFiles(settings.bot_token.get_secret_value(),
                                         settings.file_origins, client=client)
        secret = settings.signing_secret.get_secret_value() if settings.signing_secret else None
        self.identity = BotIdentity(client)
        self.bolt = AsyncApp(
            client=client,
            authorize=self.identity.authorize(),
            signing_secret=secret,
            request_verification_enabled=settings.mode == "http",
            raise_error_for_unhandled_request=True,
            logger=BOLT_LOG,
        )
        register(self.bolt, self.core, self.files)
        self._runner: web.AppRunner | None = None
        self._socket: SocketModeHandler | None = None

    def web_app(self) -> web.Application:
        return self.bolt.web_app(path="/slack/events")

    async def start(self) -> str:
        """Check the bot token with Slack, resume unfinished turns, then listen. While Slack
        cannot be reached this retries with backoff; cancelling it (a stop) ends it at once."""
        self.identity.remember(await check_bot_token(self.backend.client, self.settings.api_url))
        await self.core.start()
        if self.settings.mode == "socket":
            assert self.settings.app_token is not None
            self._socket = SocketModeHandler(self.bolt, self.settings.app_token.get_secret_value())
            await self._socket.connect_async()
            return "Slack (Socket Mode)"
        self._runner = web.AppRunner(self.web_app())
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.settings.host, self.settings.port).start()
        except OSError as exc:
            raise SlackStartError(
                f"Could not listen on {self.settings.host}:{self.settings.port} for Slack's events "
                f"({exc.strerror or exc}); set THREADEDIT_HOST and THREADEDIT_PORT to a free "
                "address.") from None
        return f"Slack (HTTP, POST http://{self.settings.host}:{self.settings.port}/slack/events)"

    async def aclose(self) -> None:
        if self._socket is not None:
            await self._socket.close_async()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.core.aclose()
        await self.files.aclose()
