"""SessionReads: what the chat core and the playground read about sessions, as service operations.

Each method is ONE read transaction of the store, so what a page or a progress line shows is one
consistent view (a turn finishing meanwhile is either wholly in it or not at all). Adapters and
the chat core read through here, never through the store itself (DESIGN.md section 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.domain import Session, SessionState, Turn
from bot.storage.blobs import blob_keys
from bot.storage.db import utcnow
from bot.storage.uow import Store, UnitOfWork


@dataclass(frozen=True)
class QueueSpot:
    """Where a queued turn stands in its session, for its first progress line."""

    session: Session
    waiting: int  # earlier turns of the session still queued or running
    next_version: int  # the number its image gets if no other turn finishes first
    slots_busy: bool = False  # the fleet's cap on model calls is reached: it waits for a slot


def reference_images(turn: Turn) -> list[str]:
    """The keys of the images a person attached to a turn, in order (what a page previews)."""
    return blob_keys(turn.user_content)


async def _state(uow: UnitOfWork, session_id: int) -> SessionState:
    return SessionState(await uow.sessions.get(session_id), await uow.turns.of_session(session_id),
                        await uow.approvals.of_session(session_id))


class SessionReads:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def session(self, session_id: int) -> Session:
        """The session (UnknownSession, a refusal, when there is none)."""
        return await self._store.read(lambda uow: uow.sessions.get(session_id))

    async def state(self, session_id: int) -> SessionState:
        """The session with all its turns and approvals."""
        return await self._store.read(lambda uow: _state(uow, session_id))

    async def state_and_audit(self, session_id: int) -> tuple[SessionState, list[dict[str, Any]]]:
        """The session's state and its audit log, read together so they agree."""
        async def read(uow: UnitOfWork) -> tuple[SessionState, list[dict[str, Any]]]:
            return await _state(uow, session_id), await uow.audit.of_session(session_id)

        return await self._store.read(read)

    async def recent(self, limit: int) -> list[SessionState]:
        """The `limit` most recently updated sessions, each with its turns, newest first."""
        async def read(uow: UnitOfWork) -> list[SessionState]:
            return [await _state(uow, s.id) for s in await uow.sessions.list(limit)]

        return await self._store.read(read)

    async def turn(self, turn_id: int) -> Turn | None:
        """The turn, or None when there is no such turn."""
        async def read(uow: UnitOfWork) -> Turn | None:
            try:
                return await uow.turns.get(turn_id)
            except KeyError:
                return None

        return await self._store.read(read)

    async def queue_spot(self, turn: Turn, cap: int | None = None) -> QueueSpot:
        """Where `turn` stands in its session: its session, the turns before it, its version; and,
        given the fleet's cap on model calls, whether every slot is taken (all in one read)."""
        async def read(uow: UnitOfWork) -> QueueSpot:
            busy = cap is not None and await uow.queue.held(utcnow()) >= cap
            return QueueSpot(await uow.sessions.get(turn.session_id),
                             await uow.turns.unfinished_before(turn.session_id, turn.id),
                             await uow.turns.next_version(turn.session_id), busy)

        return await self._store.read(read)
