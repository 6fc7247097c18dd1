"""The one interface each chat platform implements, and what adapters hand to the core.

The core decides what to say and when; a backend only knows how to say it on its platform.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

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


@dataclass(frozen=True)
class VersionPost:
    session_id: int
    version: int
    image_path: Path
    mime: str
    caption: str
    alt_text: str
    buttons: list[tuple[str, str]]  # (label, value)


class ChatBackend(Protocol):
    platform: str

    def mention(self, user: str) -> str: ...

    async def post_text(self, key: SessionKey, text: str) -> str:
        """Post in the thread; return the new message's id."""
        ...

    async def update_text(self, key: SessionKey, message_id: str, text: str) -> None: ...

    async def post_version(self, key: SessionKey, post: VersionPost) -> str:
        """Post one message with the image, its caption and its buttons; return its id."""
        ...

    async def post_ephemeral(self, key: SessionKey, user: str, text: str) -> None:
        """Tell one user something only they see (refusals)."""
        ...
