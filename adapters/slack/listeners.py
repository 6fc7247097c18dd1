"""Slack events in, ChatCore calls out. Kept thin: no decisions that Discord would also need."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.response import BoltResponse

from adapters.slack.backend import GALLERY_ACTION
from adapters.slack.files import SlackFiles
from bot.chat.backend import IncomingMessage, Origin
from bot.chat.core import ChatCore
from bot.domain import SessionKey

# Message subtypes that are something a person said; edits, deletions, joins and the bot's
# own posts are not turns.
TURN_SUBTYPES = {None, "file_share", "thread_broadcast"}
_MENTION = re.compile(r"<@[UW][A-Z0-9]+>")


def incoming(event: dict[str, Any], team: str, files: SlackFiles, mentioned: bool,
             bot_user_id: str | None) -> IncomingMessage:
    text = str(event.get("text") or "")
    if bot_user_id:
        text = text.replace(f"<@{bot_user_id}>", " ")
    text = " ".join(text.split())
    thread = str(event.get("thread_ts") or event["ts"])
    return IncomingMessage(
        key=SessionKey("slack", team, str(event["channel"]), thread),
        message_id=str(event["ts"]),
        author=str(event.get("user") or ""),
        text=text,
        files=[files.incoming(f) for f in event.get("files") or []],
        mentioned=mentioned,
    )


def delivery_id(body: dict[str, Any]) -> str:
    """Slack's id for one delivery: the event id, or a click's action_ts (each click has its own)."""
    if body.get("event_id"):
        return str(body["event_id"])
    actions = body.get("actions") or [{}]
    return f"action:{actions[0].get('action_ts')}"


@contextmanager
def handling(core: ChatCore, body: dict[str, Any]) -> Iterator[None]:
    try:
        yield
    finally:
        core.delivery_finished(delivery_id(body))


def register(app: AsyncApp, core: ChatCore, files: SlackFiles) -> None:
    def team_of(body: dict[str, Any], context: Any) -> str:
        return str(context.team_id or body.get("team_id") or "")

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any], body: dict[str, Any], context: Any) -> None:
        with handling(core, body):
            await core.on_message(incoming(event, team_of(body, context), files, True,
                                           context.bot_user_id))

    @app.event("message")
    async def on_message(event: dict[str, Any], body: dict[str, Any], context: Any) -> None:
        with handling(core, body):
            if event.get("subtype") not in TURN_SUBTYPES or event.get("bot_id"):
                return
            if not event.get("thread_ts") or event.get("thread_ts") == event.get("ts"):
                return  # top-level messages start nothing unless they mention us (app_mention)
            mentioned = bool(context.bot_user_id
                             and f"<@{context.bot_user_id}>" in (event.get("text") or ""))
            await core.on_message(incoming(event, team_of(body, context), files, mentioned,
                                           context.bot_user_id))

    async def on_reaction(event: dict[str, Any], body: dict[str, Any], added: bool) -> None:
        with handling(core, body):
            item = event.get("item") or {}
            if item.get("type") != "message":
                return
            await core.on_reaction(str(item["channel"]), str(item["ts"]), str(event["reaction"]),
                                   str(event["user"]), added, f"evt:{body.get('event_id')}")

    @app.event("reaction_added")
    async def on_reaction_added(event: dict[str, Any], body: dict[str, Any]) -> None:
        await on_reaction(event, body, True)

    @app.event("reaction_removed")
    async def on_reaction_removed(event: dict[str, Any], body: dict[str, Any]) -> None:
        await on_reaction(event, body, False)

    @app.action(re.compile(r"^te:"))
    async def on_button(ack: Any, body: dict[str, Any], action: dict[str, Any],
                        context: Any) -> None:
        with handling(core, body):
            await ack()
            await on_click(body, action, context)

    async def on_click(body: dict[str, Any], action: dict[str, Any], context: Any) -> None:
        # A click has no event id; Slack stamps each click with its own action_ts.
        container = body.get("container") or {}
        message_ts = str(container.get("message_ts") or "")
        user = str(body["user"]["id"])
        event_key = f"click:{message_ts}:{user}:{action['action_id']}:{action.get('action_ts')}"
        # Where the clicked message is, so the core can check the button's session lives there.
        # The team is the one the app is installed in (as for messages), also in Slack Connect.
        origin = Origin(workspace=team_of(body, context),
                        channel=str((body.get("channel") or {}).get("id")
                                    or container.get("channel_id") or ""),
                        thread=str(container.get("thread_ts") or message_ts))
        await core.on_button(str(action.get("value") or action["action_id"]), user, origin,
                             event_key=event_key)

    @app.action(GALLERY_ACTION)
    async def on_gallery_link(ack: Any, body: dict[str, Any]) -> None:
        with handling(core, body):
            await ack()  # the browser opens the link; nothing to do here

    @app.error
    async def on_error(error: Exception, body: dict[str, Any], logger: Any,
                       response: BoltResponse | None = None) -> BoltResponse | None:
        # Unhandled events (message_changed, channel_join, ...) must still get a 200, or Slack
        # counts failures and may disable the subscription.
        if type(error).__name__ != "BoltUnhandledRequestError":
            logger.error("slack listener failed: %s", type(error).__name__)
        else:
            core.delivery_finished(delivery_id(body))  # no listener: handled by ignoring it
        # A listener that failed after its ack (the store down past its retries) has no answer
        # left to give: Bolt then passes no response, and refuses one returned (a traceback).
        return BoltResponse(status=200, body="") if response is not None else None
