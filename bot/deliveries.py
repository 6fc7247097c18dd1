"""Deliveries: what the chat adapters receive and post, as service operations.

A chat platform delivers events (messages, reactions, clicks) at least once, and the bot posts
progress lines and versions whose message ids it must find again (a reaction names a message,
not a version; a restart must finish the line it left at "Working"). These are the operations
ChatCore and the adapters need for that, each ONE transaction of the store, named for what the
caller wants: adapters and the chat core never reach the store itself (DESIGN.md section 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.domain import FINISHED, Session, SessionKey
from bot.storage.uow import Store, UnitOfWork

PROGRESS = "progress"
VERSION = "version"


@dataclass(frozen=True)
class PostedVersion:
    """A version as a chat post shows it: its session and number."""

    session: Session
    version: int


@dataclass(frozen=True)
class PostedFailure:
    """A turn's line that says it made no version (its only control is Retry): session and turn."""

    session: Session
    turn_id: int


@dataclass(frozen=True)
class TurnPosts:
    """Where a turn's outcome goes: its session's thread and the posts already made for it."""

    key: SessionKey
    session_id: int
    progress: str | None  # the platform's message id of the progress line, if one was posted
    version: str | None  # ... and of the version post (a resumed turn may have one already)


class Deliveries:
    def __init__(self, store: Store) -> None:
        self._store = store

    # Inbound events: each handled once, however often the platform delivers it

    async def claim_event(self, platform: str, event_key: str) -> bool:
        """True the first time a platform event is seen; False for every redelivery."""
        return await self._store.transact(lambda uow: uow.events.claim(platform, event_key))

    async def session_and_event(self, platform: str, key: SessionKey,
                                event_key: str) -> tuple[Session | None, bool]:
        """The thread's session (None: it has none) and whether the event was claimed already, in
        one read: what a chat message needs to know before anything is written."""
        async def read(uow: UnitOfWork) -> tuple[Session | None, bool]:
            return await uow.sessions.find(key), await uow.events.seen(platform, event_key)

        return await self._store.read(read)

    async def release_event(self, platform: str, event_key: str) -> None:
        """Forget a claimed key, so the same key counts once more (a reaction added again)."""
        await self._store.transact(lambda uow: uow.events.release(platform, event_key))

    async def toggle_event(self, platform: str, claim: str, release: str) -> bool:
        """Claim one key and forget its opposite together (a reaction added forgets its last
        removal, and the other way round): True when `claim` was not already claimed."""
        async def toggle(uow: UnitOfWork) -> bool:
            await uow.events.release(platform, release)
            return await uow.events.claim(platform, claim)

        return await self._store.transact(toggle)

    async def refused(self, session_id: int | None, actor: str, action: str, **detail: Any) -> None:
        """Record in the audit log that a chat action was refused before reaching the service
        (a channel not allowed, a button from another thread)."""
        await self._store.transact(lambda uow: uow.audit.record(
            session_id, actor, action, "refused", **detail))

    # Posts: the platform's message ids of what the bot posted

    async def record_post(self, platform: str, channel: str, message_id: str, session_id: int,
                          turn_id: int | None, kind: str) -> None:
        await self._store.transact(lambda uow: uow.posts.record(
            platform, channel, message_id, session_id, turn_id, kind))

    async def version_post(self, platform: str, channel: str, message_id: str) -> PostedVersion | None:
        """The version a message shows, when it is one of our version posts; else None."""
        found = await self.controls_post(platform, channel, message_id)
        return found if isinstance(found, PostedVersion) else None

    async def controls_post(self, platform: str, channel: str,
                            message_id: str) -> PostedVersion | PostedFailure | None:
        """What a reaction on this message acts on: the version it shows, or the turn whose line
        it is when that turn finished without a version; else None (one read, nothing written)."""
        async def find(uow: UnitOfWork) -> PostedVersion | PostedFailure | None:
            post = await uow.posts.find(platform, channel, message_id)
            if post is None or post["turn_id"] is None or post["kind"] not in (VERSION, PROGRESS):
                return None
            turn = await uow.turns.get(post["turn_id"])
            session = await uow.sessions.get(turn.session_id)
            if post["kind"] == VERSION:
                return PostedVersion(session, turn.version) if turn.version is not None else None
            if turn.state in FINISHED and not turn.is_version:
                return PostedFailure(session, turn.id)
            return None  # a line still working, or one that now says "v2 is ready."

        return await self._store.read(find)

    async def progress_post(self, turn_id: int) -> str | None:
        """The message id of a turn's progress line, if one was posted."""
        return await self._store.read(lambda uow: uow.posts.of_turn(turn_id, PROGRESS))

    async def turn_posts(self, turn_id: int) -> TurnPosts:
        """A turn's thread and the posts made for it so far, in one consistent read."""
        async def find(uow: UnitOfWork) -> TurnPosts:
            turn = await uow.turns.get(turn_id)
            session = await uow.sessions.get(turn.session_id)
            return TurnPosts(session.key, session.id, await uow.posts.of_turn(turn_id, PROGRESS),
                             await uow.posts.of_turn(turn_id, VERSION))

        return await self._store.read(find)

    async def mark_delivered(self, turn_id: int) -> None:
        """The turn's outcome is shown in its thread: a restart need not show it again."""
        await self._store.transact(lambda uow: uow.turns.mark_delivered(turn_id))

    async def undelivered(self, platform: str) -> list[int]:
        """Ids of a platform's finished turns whose outcome was never shown in the thread (the
        process stopped in between), oldest first."""
        turns = await self._store.read(lambda uow: uow.turns.undelivered(platform))
        return [t.id for t in turns]

    # Small app state (an adapter's memo across restarts, e.g. the slash commands registered)

    async def recall(self, name: str) -> str | None:
        return await self._store.read(lambda uow: uow.app_state.get(name))

    async def remember(self, name: str, value: str) -> None:
        await self._store.transact(lambda uow: uow.app_state.set(name, value))
