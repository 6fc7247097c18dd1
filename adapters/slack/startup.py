"""Starting the Slack adapter: tokens of the right kind, accepted by Slack, and a Socket Mode
connection that retries with backoff (one line per retry) and can be cancelled at any moment."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from adapters.backoff import Backoff, Report, network_reason, report, until_reachable
from adapters.slack.settings import SlackSettings
from bot.config import ConfigError

# Bot tokens are `xoxb-`, or `xoxe.xoxb-` when the app uses token rotation (Slack's token types
# and token rotation docs); app-level tokens are `xapp-`.
BOT_TOKEN_PREFIXES = ("xoxb-", "xoxe.xoxb-")
ROTATING_BOT_TOKEN_PREFIX = "xoxe.xoxb-"  # expires every 12 hours (Slack's token rotation guide)
APP_TOKEN_PREFIX = "xapp-"
# What Slack answers for a token that is wrong, revoked, expired or belongs to a deactivated
# account. Retrying cannot help: the operator must change the token.
AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "token_revoked", "token_expired",
                         "account_inactive", "not_allowed_token_type"})
# Slack's own trouble: worth waiting out.
TRANSIENT_ERRORS = frozenset({"internal_error", "fatal_error", "service_unavailable",
                              "request_timeout", "ratelimited"})


class SlackStartError(ConfigError):
    """Slack refused a token or the set-up; the message is one sentence for the operator."""


def _kind(token: str) -> str:
    if token.startswith(APP_TOKEN_PREFIX):
        return "an app-level token (xapp-)"
    if token.startswith(("xoxp-", "xoxe.xoxp-")):
        return "a user token (xoxp-)"
    if token.startswith(BOT_TOKEN_PREFIXES):
        return "a bot token (xoxb-)"
    return "not a Slack token of a kind threadedit uses"


def check_token_kinds(settings: SlackSettings, *, say: Report = report) -> None:
    """Refuse a token pasted into the wrong variable before anything is sent to Slack."""
    if settings.bot_token is not None:
        bot = settings.bot_token.get_secret_value().strip()
        if not bot.startswith(BOT_TOKEN_PREFIXES):
            raise SlackStartError(
                f"SLACK_BOT_TOKEN is {_kind(bot)}; it must be the Bot User OAuth Token that starts "
                "with xoxb- (Slack app settings → Install App).")
        if bot.startswith(ROTATING_BOT_TOKEN_PREFIX):
            # It works until it expires; renewing it would need the app's client secret and a
            # refresh token, which threadedit does not take.
            say("SLACK_BOT_TOKEN is a rotating token (xoxe.xoxb-, the app has token rotation on): "
                "Slack expires it within 12 hours and threadedit cannot renew it; put the new one "
                "in SLACK_BOT_TOKEN and restart before then.")
    if settings.app_token is not None:
        app = settings.app_token.get_secret_value().strip()
        if not app.startswith(APP_TOKEN_PREFIX):
            raise SlackStartError(
                f"SLACK_APP_TOKEN is {_kind(app)}; it must be an app-level token that starts with "
                "xapp- (Basic Information → App-Level Tokens, scope connections:write).")


def host_of(api_url: str) -> str:
    return urlsplit(api_url).netloc or api_url


def transient_problem(exc: Exception, host: str, method: str) -> str | None:
    """The sentence for a failure worth retrying (Slack unreachable or in trouble), else None."""
    if (reason := network_reason(exc)) is not None:
        return (f"Slack is unreachable at {host} ({method}: {reason}); check the network, a "
                "proxy, or SLACK_API_URL")
    if isinstance(exc, SlackApiError):
        error = str(exc.response.get("error") or "")
        if exc.response.status_code >= 500 or error in TRANSIENT_ERRORS:
            return f"Slack answered {method} at {host} with {error or f'HTTP {exc.response.status_code}'}"
    return None


async def check_bot_token(client: AsyncWebClient, api_url: str, *,
                          say: Report = report) -> AsyncSlackResponse:
    """auth.test with the bot token: a refused token is a sentence, Slack unreachable a retry.
    The answer (who the bot is; its scopes in a header) is what Bolt is then given."""
    host = host_of(api_url)
    try:
        response = await until_reachable(client.auth_test,
                                         lambda e: transient_problem(e, host, "auth.test"), say=say)
    except SlackApiError as exc:
        error = exc.response.get("error")
        if error in AUTH_ERRORS:
            raise SlackStartError(
                f"Slack refused SLACK_BOT_TOKEN ({error}): copy the Bot User OAuth Token (xoxb-...) "
                "again from the app's Install App page, and reinstall the app if it was removed."
            ) from None
        raise SlackStartError(f"Slack answered auth.test with {error or 'an error'}; check "
                              "SLACK_BOT_TOKEN and SLACK_API_URL.") from None
    return response


class RetryingSocketModeClient(SocketModeClient):
    """slack_sdk's aiohttp Socket Mode client with its connection loop replaced.

    The SDK's `connect()` retries for ever every `ping_interval` seconds, logging a full
    traceback each time, and turns a refused app token into the same endless loop. Here a
    refused token raises SlackStartError, anything network-shaped is one line and a growing
    wait, and the waits are plain sleeps a cancellation ends. The body of one attempt mirrors
    the SDK's (slack_sdk 3.x `SocketModeClient.connect`).
    """

    def __init__(self, *, say: Report = report, **kw: Any) -> None:
        super().__init__(**kw)
        self._say = say
        self._host = host_of(str(self.web_client.base_url))

    async def connect(self) -> None:
        if self.closed:
            return
        try:
            await until_reachable(self._connect_once, self._transient, say=self._say,
                                  backoff=Backoff())
        except SlackApiError as exc:
            if self.closed:
                return  # stopped while connecting: nothing to report
            error = exc.response.get("error")
            if error in AUTH_ERRORS:
                raise SlackStartError(
                    f"Slack refused SLACK_APP_TOKEN ({error}): generate an app-level token with "
                    "connections:write (Basic Information → App-Level Tokens) and put it in "
                    "SLACK_APP_TOKEN.") from None
            raise SlackStartError(
                f"Slack answered apps.connections.open with {error or 'an error'}; check that "
                "Socket Mode is turned on for the app (Settings → Socket Mode).") from None
        except Exception:
            if not self.closed:
                raise

    def _transient(self, exc: Exception) -> str | None:
        self.wss_uri = None  # a Socket Mode URL is good for one connection: ask for a new one
        if self.closed:
            return None
        return transient_problem(exc, self._host, "Socket Mode")

    async def connect_to_new_endpoint(self, force: bool = False) -> None:
        # The SDK asks for a new URL here, outside connect(), so a failure there skips our
        # retry loop; connect() asks for it inside the loop instead.
        acquired = False
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                acquired = await asyncio.wait_for(self.connect_operation_lock.acquire(), timeout=5)
            if force or (acquired and not await self.is_connected()):
                self.wss_uri = None
                await self.connect()
        finally:
            if acquired:
                self.connect_operation_lock.release()

    async def issue_new_wss_url(self) -> str:
        # The SDK's logs every refusal as an error of its own; connect() reports ours. A 429
        # is waited out by the web client's rate-limit handler.
        response = await self.web_client.apps_connections_open(app_token=self.app_token)
        return str(response["url"])

    async def _connect_once(self) -> None:
        old, self.auto_reconnect_enabled = self.current_session, False
        if old is not None:
            with contextlib.suppress(Exception):  # a broken old socket may fail to close
                await old.close()
        if self.aiohttp_client_session.closed and not self.closed:
            self.aiohttp_client_session = aiohttp.ClientSession()
        if self.wss_uri is None:
            self.wss_uri = await self.issue_new_wss_url()
        self.current_session = await self.aiohttp_client_session.ws_connect(
            self.wss_uri, autoping=False, heartbeat=self.ping_interval, proxy=self.proxy,
            ssl=self.web_client.ssl if self.web_client.ssl is not None else True)
        self.auto_reconnect_enabled = self.default_auto_reconnect_enabled
        self.stale = False
        await self.current_session.ping(f"sdk-ping-pong:{time.time()}".encode())
        if self.current_session_monitor is not None:
            self.current_session_monitor.cancel()
        self.current_session_monitor = asyncio.ensure_future(self.monitor_current_session())
        if self.message_receiver is not None:
            self.message_receiver.cancel()
        self.message_receiver = asyncio.ensure_future(self.receive_messages())


class SocketModeHandler(AsyncSocketModeHandler):
    """Bolt's aiohttp Socket Mode handler on the retrying client above."""

    def __init__(self, app: AsyncApp, app_token: str, *, say: Report = report) -> None:
        # Not super().__init__: it would build (and leave open) a client of the SDK's own kind.
        self.app = app
        self.app_token = app_token
        self.client = RetryingSocketModeClient(
            say=say, app_token=app_token, logger=app.logger, web_client=app.client, ping_interval=10)
        self.client.socket_mode_request_listeners.append(self.handle)  # type: ignore[arg-type]
