"""The one interface each chat platform implements, and what adapters hand to the core.

The core decides what to say and when; a backend only knows how to say it on its platform. What
the core says is neutral `Text` (bot.chat.text): each backend renders it in its own syntax and
escapes plain words for it, and each backend says which of its reactions mean which control.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bot.chat.controls import Control
from bot.chat.text import Text
from bot.domain import SessionKey


class AttachmentError(Exception):
    """A file we could not fetch; the message is a sentence for the thread."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class IncomingFile:
    name: str | None
    size: int | None
    fetch: Callable[[], Awaitable[bytes]]  # raises AttachmentError


@dataclass(frozen=True)
class IncomingMessage:
    key: SessionKey  # the thread this message belongs to (thread = the thread's root id)
    message_id: str  # the platform's id of this message: redeliveries share it
    author: str
    text: str
    files: Sequence[IncomingFile] = field(default_factory=tuple)
    mentioned: bool = False  # addressed to the bot: may start a session
    roles: frozenset[str] = frozenset()  # the author's platform roles (ids and names), if any
    # The platform opens a new thread on this message when it starts a session (Discord); the
    # key's thread is then the id that thread will have.
    needs_thread: bool = False


@dataclass(frozen=True)
class Origin:
    """Where a click came from, as the platform reports it. A button's value names a session and
    a version; the core acts only if that session lives exactly here."""

    workspace: str  # Slack: the team the app is installed in; Discord: the guild ("" in a DM)
    channel: str  # the channel the clicked message is in (Discord: the thread, a channel of its own)
    thread: str  # the thread the clicked message is in (Slack: its thread_ts; Discord: the thread)


# (label, value) of each button under a post: the value is bot.chat.controls `button_value`.
Buttons = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class VersionPost:
    session_id: int
    version: int
    image_path: Path
    mime: str
    caption: Text
    alt_text: str  # plain words, never formatted: describes the image to screen readers
    buttons: list[tuple[str, str]]  # (label, value)
    gallery_url: str | None = None  # a signed link to the session's gallery, when one is served


class ChatBackend(Protocol):
    platform: str
    # The platform's reactions that work as controls, as the platform reports them (Slack: emoji
    # names; Discord: the characters).
    reactions: Mapping[str, Control]

    def post_channel(self, key: SessionKey) -> str:
        """The channel id the platform reports for messages posted in this session's thread
        (Slack: the channel; Discord: the thread itself), so reactions map back to posts."""
        ...

    async def open_thread(self, msg: IncomingMessage) -> bool:
        """Open the thread a new session lives in (only asked when `msg.needs_thread`). On
        failure, tell the user where they wrote and return False."""
        ...

    async def show_working(self, key: SessionKey) -> None:
        """A platform's own sign of activity while a turn runs (Discord's typing); may do nothing."""
        ...

    async def post_text(self, key: SessionKey, text: Text, *, buttons: Buttons = ()) -> str:
        """Post in the thread, with these buttons under the text (as a version post's, see
        `post_version`; a line that made no version has a Retry); return the new message's id."""
        ...

    async def update_text(self, key: SessionKey, message_id: str, text: Text, *,
                          buttons: Buttons = ()) -> None:
        """Replace a post's text; with `buttons`, put them under it. Without, any it has stay."""
        ...

    async def post_version(self, key: SessionKey, post: VersionPost) -> str:
        """Post one message with the image, its caption and its buttons; return its id."""
        ...

    async def post_ephemeral(self, key: SessionKey, user: str, text: Text) -> None:
        """Tell one user something only they see (refusals)."""
        ...
