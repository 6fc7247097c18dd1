"""Who the bot is, asked of Slack once per process and given to Bolt for every event.

Bolt's single-workspace authorization (slack_bolt AsyncSingleTeamAuthorization) calls auth.test
on the first event and keeps the answer, but every event that arrives before that first call has
returned calls it too: a replica started into a burst of 50 mentions made 52 auth.test calls,
each one in the way of a first answer. The adapter's start already asks (startup.check_bot_token),
so Bolt gets that answer through its public `authorize=` hook instead. What Bolt then sees is
what its own authorization built from its own call (its `_to_authorize_result`, slack_bolt 1.30;
but a rotating bot token counts as a bot token here),
and like it this never asks again: a token revoked later makes the Web API calls fail, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from slack_bolt.authorization import AuthorizeResult
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from adapters.slack.startup import BOT_TOKEN_PREFIXES


def _is_bot_token(token: str) -> bool:
    # Bolt's own test (slack_bolt middleware/authorization/internals.py `_is_bot_token`) takes
    # only `xoxb-`: with a rotating bot token (`xoxe.xoxb-`, accepted at start) the listeners
    # would see no bot user id, and a mention of the bot in a thread would not be recognised.
    return token.startswith(BOT_TOKEN_PREFIXES)


def authorize_result(answer: AsyncSlackResponse, token: str, request_user_id: str | None) -> AuthorizeResult:
    """What Bolt's single-workspace authorization builds from an auth.test answer."""
    bot = _is_bot_token(token)
    user_id = answer.get("user_id")
    scopes = answer.headers.get("x-oauth-scopes")
    return AuthorizeResult(
        enterprise_id=answer.get("enterprise_id"),
        team_id=answer.get("team_id"),
        bot_id=answer.get("bot_id"),
        bot_user_id=user_id if bot else None,
        bot_token=token if bot else None,
        user_id=request_user_id or (None if bot else user_id),
        user_token=None if bot else token,
        bot_scopes=scopes if bot else None,
        user_scopes=None if bot else scopes,
    )


class BotIdentity:
    """The bot token's auth.test answer: the one the start-up got (`remember`), or else asked
    for once, however many events arrive together (an app served without `start`, as in tests)."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client
        self._answer: AsyncSlackResponse | None = None
        self._asking = asyncio.Lock()

    def remember(self, answer: AsyncSlackResponse) -> None:
        self._answer = answer

    async def answer(self) -> AsyncSlackResponse:
        if self._answer is None:
            async with self._asking:
                if self._answer is None:
                    self._answer = await self._client.auth_test()
        return self._answer

    def authorize(self) -> Callable[..., Awaitable[AuthorizeResult]]:
        """The function for AsyncApp(authorize=...). Bolt passes arguments by their names (a plain
        function: a bound method's `self` would be taken for one of them). A SlackApiError from
        an auth.test asked here is Bolt's to handle, as with its own call: it logs an error and
        answers the event with its "no longer available" text."""
        token = str(self._client.token)

        async def authorize(user_id: str | None) -> AuthorizeResult:
            return authorize_result(await self.answer(), token, user_id)

        return authorize
