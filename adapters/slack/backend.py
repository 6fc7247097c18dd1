"""SlackBackend: how ChatCore's posts look in a Slack thread."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.chat.backend import Buttons, IncomingMessage, VersionPost
from bot.chat.controls import Control
from bot.chat.text import Code, Link, Mention, Plain, Strong, Text
from bot.domain import SessionKey

log = logging.getLogger(__name__)

# Slack finishes an upload asynchronously; an image block naming the file can be refused with
# "invalid slack file" for a moment after. These waits cover that, then we fall back.
FILE_READY_WAITS = (0.5, 1.0, 2.0, 4.0)
GALLERY_ACTION = "threadedit-gallery"  # a link button; Slack still sends its click, which is acked
# Slack sends a reaction's emoji name.
REACTIONS: Mapping[str, Control] = {
    "leftwards_arrow_with_hook": Control.UNDO,
    "repeat": Control.RETRY,
    "white_check_mark": Control.APPROVE,
}

# mrkdwn has no escape for its formatting characters (a backslash stays visible). A zero-width
# space on each side of one keeps it from opening or closing bold, italic or strike, and the
# reader still sees (and copies) the character itself. Between two letters or digits (file_name)
# *, _ and ~ format nothing in Slack and are left alone; a backtick always gets the spaces.
_MARKERS = re.compile(r"`|[*_~](?![^\W_])|(?<![^\W_])[*_~]")
ZWSP = "\u200b"


def escape(text: str) -> str:
    """Plain words for mrkdwn: &, < and > as the entities Slack asks for (so a typed <!channel> or
    <@U123> is text, not a ping), and formatting characters that format nothing."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKERS.sub(lambda m: f"{ZWSP}{m[0]}{ZWSP}", text)


def mrkdwn(text: Text, *, bold: bool = True) -> str:
    """The neutral text as Slack mrkdwn. `bold=False` for a notification's fallback text."""
    out: list[str] = []
    for span in text.spans:
        match span:
            case Plain(words):
                out.append(escape(words))
            case Strong(words):
                out.append(f"*{escape(words)}*" if bold else escape(words))
            case Code(words):
                safe = words.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                out.append(f"`{safe}`" if "`" not in words else escape(words))
            case Mention(user):
                out.append(f"<@{user}>" if user.isascii() and user.isalnum() else escape(user))
            case Link(url, label):
                target = url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E")
                out.append(f"<{target.replace('|', '%7C')}|{escape(label)}>")
    return "".join(out)


def version_blocks(post: VersionPost, file_id: str) -> list[dict[str, Any]]:
    return [
        {"type": "image", "slack_file": {"id": file_id}, "alt_text": post.alt_text[:2000],
         "title": {"type": "plain_text", "text": f"v{post.version}"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": mrkdwn(post.caption)[:3000]}]},
        controls_block(post),
    ]


def controls_block(post: VersionPost) -> dict[str, Any]:
    return buttons_block(f"te-controls-{post.session_id}-{post.version}", post.buttons,
                         post.gallery_url)


def buttons_block(block_id: str, buttons: Buttons, gallery_url: str | None = None) -> dict[str, Any]:
    return {
        "type": "actions",
        "block_id": block_id,
        "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": label},
             "action_id": value, "value": value,
             **({"style": "primary"} if label == "Approve" else {})}
            for label, value in buttons
        ] + ([{"type": "button", "text": {"type": "plain_text", "text": "Gallery"},
               "action_id": GALLERY_ACTION, "url": gallery_url}] if gallery_url else []),
    }


def line_blocks(text: Text, buttons: Buttons) -> list[dict[str, Any]] | None:
    """A line with buttons under it (a turn that made no version, and its Retry); None without:
    a plain line is its text alone. An update without blocks leaves a message's blocks as they
    are (Slack's chat.update), so a line given buttons keeps them."""
    if not buttons:
        return None
    return [{"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn(text)[:3000]}},
            buttons_block(f"te-line-{buttons[0][1]}", buttons)]


class SlackBackend:
    platform = "slack"
    reactions = REACTIONS

    def __init__(self, client: AsyncWebClient,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.client = client
        self._sleep = sleep

    def post_channel(self, key: SessionKey) -> str:
        return key.channel

    async def open_thread(self, msg: IncomingMessage) -> bool:
        return True  # a Slack thread exists as soon as someone replies to a message

    async def show_working(self, key: SessionKey) -> None:
        return None  # bots have no typing indicator over the Events API

    async def post_text(self, key: SessionKey, text: Text, *, buttons: Buttons = ()) -> str:
        r = await self.client.chat_postMessage(channel=key.channel, thread_ts=key.thread,
                                               text=mrkdwn(text), blocks=line_blocks(text, buttons))
        return str(r["ts"])

    async def update_text(self, key: SessionKey, message_id: str, text: Text, *,
                          buttons: Buttons = ()) -> None:
        await self.client.chat_update(channel=key.channel, ts=message_id, text=mrkdwn(text),
                                      blocks=line_blocks(text, buttons))

    async def post_ephemeral(self, key: SessionKey, user: str, text: Text) -> None:
        await self.client.chat_postEphemeral(channel=key.channel, user=user, text=mrkdwn(text),
                                             thread_ts=key.thread)

    async def post_version(self, key: SessionKey, post: VersionPost) -> str:
        """One message: the image (an uploaded file shown by an image block), caption, buttons."""
        ext = post.image_path.suffix or ".jpg"
        data = await asyncio.to_thread(post.image_path.read_bytes)
        upload = await self.client.files_upload_v2(
            content=data, filename=f"v{post.version}{ext}", title=f"v{post.version}",
            alt_txt=post.alt_text[:1000])
        file_id = str(upload["file"]["id"])
        fallback = mrkdwn(post.caption, bold=False)
        for wait in (*FILE_READY_WAITS, None):
            try:
                r = await self.client.chat_postMessage(
                    channel=key.channel, thread_ts=key.thread, text=fallback,
                    blocks=version_blocks(post, file_id))
                return str(r["ts"])
            except SlackApiError as exc:
                if exc.response.get("error") != "invalid_blocks" or wait is None:
                    break
                await self._sleep(wait)
        # The image block was not accepted: share the file into the thread instead, and put the
        # caption and buttons on a message of their own, so nothing is lost.
        log.warning("slack refused the image block for v%s; sharing the file instead", post.version)
        await self.client.files_upload_v2(
            content=data, filename=f"v{post.version}{ext}", title=f"v{post.version}",
            channel=key.channel, thread_ts=key.thread)
        r = await self.client.chat_postMessage(
            channel=key.channel, thread_ts=key.thread, text=fallback,
            blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn(post.caption)[:3000]}},
                    controls_block(post)])
        return str(r["ts"])
