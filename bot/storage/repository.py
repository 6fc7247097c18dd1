"""SessionStore: the store as its callers have used it, each method one transaction.

Every method is exactly one `transact` (writes) or `read` (reads) on the repositories of
bot/storage/uow.py. To group several writes in one transaction, a caller does not pass a
transaction into these methods; it calls `store.transact(op)` and, inside `op`, the
repositories on the unit of work it is given (`uow.turns.finish(...)`, `uow.audit.record(...)`).
Why that form: a method here always means "its own transaction", and code inside an op can only
reach the uow's repositories, so a write cannot silently fall outside the transaction it was
meant to join (calling a store method from inside an op is refused, see Store._run). An
optional `uow=` argument on each method would give every method two meanings and make
forgetting it a silent bug.
"""

from __future__ import annotations

from typing import Any

from bot.domain import Session, SessionKey, SessionState, Turn, TurnKind, TurnState
from bot.storage.uow import Store


class SessionStore(Store):
    # Sessions

    async def find_session(self, key: SessionKey) -> Session | None:
        return await self.read(lambda uow: uow.sessions.find(key))

    async def create_session(
        self, key: SessionKey, started_by: str, model: str, aspect: str | None, size: str | None
    ) -> Session:
        return await self.transact(lambda uow: uow.sessions.create(key, started_by, model, aspect, size))

    async def get_session(self, session_id: int) -> Session:
        return await self.read(lambda uow: uow.sessions.get(session_id))

    async def list_sessions(self, limit: int = 200) -> list[Session]:
        return await self.read(lambda uow: uow.sessions.list(limit))

    async def update_settings(
        self, session_id: int, *, model: str, aspect: str | None, size: str | None
    ) -> None:
        await self.transact(lambda uow: uow.sessions.update_settings(
            session_id, model=model, aspect=aspect, size=size))

    async def set_head(self, session_id: int, turn_id: int | None) -> None:
        await self.transact(lambda uow: uow.sessions.set_head(session_id, turn_id))

    async def load_state(self, session_id: int) -> SessionState:
        return await self.read(lambda uow: uow.load_state(session_id))

    # Turns

    async def add_turn(
        self,
        session: Session,
        *,
        kind: TurnKind,
        instruction: str,
        author: str,
        user_content: dict[str, Any],
        parent_turn_id: int | None,
        model: str,
        aspect: str | None,
        size: str | None,
    ) -> Turn:
        return await self.transact(lambda uow: uow.turns.add(
            session, kind=kind, instruction=instruction, author=author, user_content=user_content,
            parent_turn_id=parent_turn_id, model=model, aspect=aspect, size=size))

    async def get_turn(self, turn_id: int) -> Turn:
        return await self.read(lambda uow: uow.turns.get(turn_id))

    async def next_version(self, session_id: int) -> int:
        """The number the session's next version will get (when no other turn finishes first)."""
        return await self.read(lambda uow: uow.turns.next_version(session_id))

    async def unfinished_before(self, session_id: int, turn_id: int) -> int:
        """How many earlier turns of the session are still queued or running."""
        return await self.read(lambda uow: uow.turns.unfinished_before(session_id, turn_id))

    async def unfinished_turns(self, platform: str | None = None) -> list[Turn]:
        """Queued or running turns, oldest first; only one platform's when given."""
        return await self.read(lambda uow: uow.turns.unfinished(platform))

    async def mark_running(self, turn_id: int, parent_turn_id: int | None) -> None:
        await self.transact(lambda uow: uow.turns.mark_running(turn_id, parent_turn_id))

    async def finish_turn(
        self,
        turn: Turn,
        state: TurnState,
        *,
        model_content: dict[str, Any] | None = None,
        image_blob: str | None = None,
        image_mime: str | None = None,
        text_reply: str | None = None,
        reason: str | None = None,
        message: str | None = None,
        usage: dict[str, Any] | None = None,
        anchor_content: dict[str, Any] | None = None,
    ) -> Turn:
        """Record the outcome; a version gets the next number and becomes the head, atomically."""
        return await self.transact(lambda uow: uow.turns.finish(
            turn, state, model_content=model_content, image_blob=image_blob, image_mime=image_mime,
            text_reply=text_reply, reason=reason, message=message, usage=usage,
            anchor_content=anchor_content))

    # Approvals and audit

    async def add_approval(self, session_id: int, turn_id: int, by: str) -> bool:
        return await self.transact(lambda uow: uow.approvals.add(session_id, turn_id, by))

    async def withdraw_approval(self, turn_id: int, approved_by: str, by: str) -> int:
        return await self.transact(lambda uow: uow.approvals.withdraw(turn_id, approved_by, by))

    async def audit(
        self, session_id: int | None, actor: str, action: str, outcome: str, **detail: Any
    ) -> None:
        await self.transact(lambda uow: uow.audit.record(session_id, actor, action, outcome, **detail))

    async def audit_log(self, session_id: int) -> list[dict[str, Any]]:
        return await self.read(lambda uow: uow.audit.of_session(session_id))

    # Chat posts and inbound events

    async def claim_event(self, platform: str, event_key: str) -> bool:
        """True the first time a platform event is seen; False for every redelivery."""
        return await self.transact(lambda uow: uow.events.claim(platform, event_key))

    async def mark_delivered(self, turn_id: int) -> None:
        await self.transact(lambda uow: uow.turns.mark_delivered(turn_id))

    async def undelivered_turns(self, platform: str) -> list[Turn]:
        """Finished turns of a platform's sessions whose outcome was never shown in the thread
        (the process stopped in between): those that have a progress post, oldest first."""
        return await self.read(lambda uow: uow.turns.undelivered(platform))

    async def release_event(self, platform: str, event_key: str) -> None:
        """Forget a claimed key, so the same key counts once more (a reaction added again)."""
        await self.transact(lambda uow: uow.events.release(platform, event_key))

    async def get_app_state(self, name: str) -> str | None:
        return await self.read(lambda uow: uow.app_state.get(name))

    async def set_app_state(self, name: str, value: str) -> None:
        await self.transact(lambda uow: uow.app_state.set(name, value))

    async def record_post(
        self, platform: str, channel: str, message_id: str, session_id: int, turn_id: int | None,
        kind: str,
    ) -> None:
        await self.transact(lambda uow: uow.posts.record(
            platform, channel, message_id, session_id, turn_id, kind))

    async def find_post(self, platform: str, channel: str, message_id: str) -> dict[str, Any] | None:
        """The post's row as a plain mapping (id, platform, channel, message_id, session_id,
        turn_id, kind, created_at), or None."""
        return await self.read(lambda uow: uow.posts.find(platform, channel, message_id))

    async def post_for_turn(self, turn_id: int, kind: str) -> str | None:
        return await self.read(lambda uow: uow.posts.of_turn(turn_id, kind))
