"""A chat platform in memory: bot.chat.backend.ChatBackend for fast ChatCore tests.

It records what the core says, in order: posts (text and versions), edits of posts, ephemeral
messages, threads opened, typing shown, each as neutral Text rendered with `.plain()`. Its
reactions are its own vocabulary (FAKE_REACTIONS unless given), like each real backend's. The
wire-level backends (Slack, Discord) are tested against tests/fakes/slack_server.py and
discord_server.py; this one is for what the core decides, not how a platform is spoken to.

Tests wait for an observable end with `wait_for(predicate)`, never for a fixed time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bot.chat.backend import Buttons, IncomingMessage, VersionPost
from bot.chat.controls import Control
from bot.chat.text import Text
from bot.domain import SessionKey

# Reactions this platform reports; on purpose neither Slack's emoji names nor Discord's characters.
FAKE_REACTIONS: Mapping[str, Control] = {"back": Control.UNDO, "again": Control.RETRY,
                                          "bigger": Control.UPSCALE, "ok": Control.APPROVE}


@dataclass(frozen=True)
class Posted:
    """One message the core posted (kind "text" or "version") or showed one person ("ephemeral")."""

    kind: str
    thread: str
    message_id: str
    text: str  # the Text as plain words (a version: its caption)
    user: str | None = None  # who an ephemeral message was for
    version: VersionPost | None = None


class FakeBackend:
    def __init__(self, platform: str = "fake", reactions: Mapping[str, Control] | None = None) -> None:
        self.platform = platform
        self.reactions: Mapping[str, Control] = FAKE_REACTIONS if reactions is None else reactions
        self.posts: list[Posted] = []
        self.edits: list[tuple[str, str]] = []  # (message id, new text)
        self.buttons: dict[str, list[tuple[str, str]]] = {}  # message id -> its text post's buttons
        self.threads_opened: list[str] = []
        self.working_shown = 0
        self.refuse_threads = False  # open_thread fails, as a platform without permission does
        self._ids = 0
        self._changed = asyncio.Condition()

    # What a test reads

    def texts(self, thread: str | None = None) -> list[str]:
        """The plain text of every text post (and its latest edit), in order."""
        edited = dict(self.edits)
        return [edited.get(p.message_id, p.text) for p in self.posts
                if p.kind == "text" and (thread is None or p.thread == thread)]

    def versions(self, thread: str | None = None) -> list[VersionPost]:
        return [p.version for p in self.posts if p.version is not None
                and (thread is None or p.thread == thread)]

    def ephemerals(self, user: str | None = None) -> list[str]:
        return [p.text for p in self.posts if p.kind == "ephemeral" and (user is None or p.user == user)]

    def line_buttons(self, message_id: str) -> list[tuple[str, str]]:
        """The (label, value) buttons a text post has now (posted with it, or given by an edit)."""
        return self.buttons.get(message_id, [])

    async def wait_for(self, predicate: Callable[[], object], within: float = 5.0) -> None:
        """Until `predicate()` is true after something was posted or edited; fails after `within` s."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(predicate)

    # ChatBackend

    def post_channel(self, key: SessionKey) -> str:
        return key.channel

    async def open_thread(self, msg: IncomingMessage) -> bool:
        if self.refuse_threads:
            return False
        self.threads_opened.append(msg.key.thread)
        return True

    async def show_working(self, key: SessionKey) -> None:
        self.working_shown += 1

    async def post_text(self, key: SessionKey, text: Text, *, buttons: Buttons = ()) -> str:
        message_id = self._next_id()
        if buttons:
            self.buttons[message_id] = list(buttons)
        return await self._post(Posted("text", key.thread, message_id, text.plain()))

    async def update_text(self, key: SessionKey, message_id: str, text: Text, *,
                          buttons: Buttons = ()) -> None:
        async with self._changed:
            if buttons:  # as the platforms do: an edit without buttons leaves them as they are
                self.buttons[message_id] = list(buttons)
            self.edits.append((message_id, text.plain()))
            self._changed.notify_all()

    async def post_version(self, key: SessionKey, post: VersionPost) -> str:
        return await self._post(Posted("version", key.thread, self._next_id(), post.caption.plain(),
                                       version=post))

    async def post_ephemeral(self, key: SessionKey, user: str, text: Text) -> None:
        await self._post(Posted("ephemeral", key.thread, self._next_id(), text.plain(), user=user))

    def _next_id(self) -> str:
        self._ids += 1
        return f"m{self._ids}"

    async def _post(self, posted: Posted) -> str:
        async with self._changed:
            self.posts.append(posted)
            self._changed.notify_all()
        return posted.message_id
