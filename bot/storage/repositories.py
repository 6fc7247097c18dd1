"""Repositories for sessions, turns, approvals and the audit log, each on one AsyncConnection
inside a transaction the unit of work holds (bot/storage/uow.py). Written once in SQLAlchemy
Core over bot/storage/schema.py: the same statements run on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain import Session, SessionKey, Turn, TurnKind, TurnState, UnknownSession
from bot.storage.db import utcnow
from bot.storage.rows import approval_from, session_from, to_json, turn_from, upsert_insert
from bot.storage.schema import approvals, audit_log, posts, sessions, turns

UNFINISHED = (TurnState.QUEUED.value, TurnState.RUNNING.value)


# PostgreSQL: the channel workers LISTEN on (bot/storage/notices.py); the payload is a turn id only.
TURNS_CHANNEL = "threadedit_turns"


async def announce(conn: AsyncConnection, turn_id: int) -> None:
    """Tell the fleet's workers that the queue changed (a turn added, finished or given back) when
    this transaction commits: PostgreSQL sends a NOTIFY only on commit. SQLite workers poll."""
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_notify(TURNS_CHANNEL, str(turn_id))))


class Repository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn


class Sessions(Repository):
    async def find(self, key: SessionKey) -> Session | None:
        row = (await self.conn.execute(select(sessions).where(
            sessions.c.platform == key.platform, sessions.c.workspace == key.workspace,
            sessions.c.channel == key.channel, sessions.c.thread == key.thread))).mappings().first()
        return session_from(row) if row else None

    async def get(self, session_id: int, *, for_update: bool = False) -> Session:
        """The session; `for_update` also locks its row until the transaction ends (PostgreSQL:
        SELECT .. FOR UPDATE; SQLite needs none, its BEGIN IMMEDIATE holds the whole file)."""
        query = select(sessions).where(sessions.c.id == session_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.conn.execute(query)).mappings().first()
        if row is None:
            raise UnknownSession(session_id)
        return session_from(row)

    async def create(self, key: SessionKey, started_by: str, model: str, aspect: str | None,
                     size: str | None) -> Session:
        """The session of this thread: made now, or the one another caller made first."""
        now = utcnow()
        await self.conn.execute(upsert_insert(self.conn, sessions).values(
            platform=key.platform, workspace=key.workspace, channel=key.channel, thread=key.thread,
            model=model, aspect_ratio=aspect, image_size=size, started_by=started_by,
            created_at=now, updated_at=now,
        ).on_conflict_do_nothing(index_elements=["platform", "workspace", "channel", "thread"]))
        session = await self.find(key)
        assert session is not None
        return session

    async def list(self, limit: int = 200) -> list[Session]:
        rows = await self.conn.execute(
            select(sessions).order_by(sessions.c.updated_at.desc(), sessions.c.id.desc()).limit(limit))
        return [session_from(r) for r in rows.mappings()]

    async def update_settings(self, session_id: int, *, model: str, aspect: str | None,
                              size: str | None) -> None:
        await self.conn.execute(update(sessions).where(sessions.c.id == session_id).values(
            model=model, aspect_ratio=aspect, image_size=size, updated_at=utcnow()))

    async def set_head(self, session_id: int, turn_id: int | None) -> None:
        await self.conn.execute(update(sessions).where(sessions.c.id == session_id).values(
            head_turn_id=turn_id, updated_at=utcnow()))

    async def touch(self, session_id: int, now: str) -> None:
        await self.conn.execute(update(sessions).where(sessions.c.id == session_id).values(updated_at=now))


class Turns(Repository):
    async def add(self, session: Session, *, kind: TurnKind, instruction: str, author: str,
                  user_content: dict[str, Any], parent_turn_id: int | None, model: str,
                  aspect: str | None, size: str | None) -> Turn:
        now = utcnow()
        turn_id = (await self.conn.execute(turns.insert().returning(turns.c.id).values(
            session_id=session.id, parent_turn_id=parent_turn_id, kind=kind.value,
            instruction=instruction, author=author, user_content=to_json(user_content),
            state=TurnState.QUEUED.value, model=model, aspect_ratio=aspect, image_size=size,
            created_at=now))).scalar_one()
        await Sessions(self.conn).touch(session.id, now)
        await announce(self.conn, turn_id)
        return await self.get(turn_id)

    async def get(self, turn_id: int) -> Turn:
        row = (await self.conn.execute(select(turns).where(turns.c.id == turn_id))).mappings().first()
        if row is None:
            raise KeyError(f"no turn {turn_id}")
        return turn_from(row)

    async def of_session(self, session_id: int) -> list[Turn]:
        rows = await self.conn.execute(
            select(turns).where(turns.c.session_id == session_id).order_by(turns.c.id))
        return [turn_from(r) for r in rows.mappings()]

    async def next_version(self, session_id: int) -> int:
        """The number the session's next version will get (inside a transaction that locked the
        session, see `finish`: will get)."""
        found = await self.conn.execute(select(func.coalesce(func.max(turns.c.version), 0) + 1)
                                        .where(turns.c.session_id == session_id))
        return int(found.scalar_one())

    async def unfinished_before(self, session_id: int, turn_id: int) -> int:
        """How many earlier turns of the session are still queued or running."""
        found = await self.conn.execute(select(func.count()).select_from(turns).where(
            turns.c.session_id == session_id, turns.c.id < turn_id, turns.c.state.in_(UNFINISHED)))
        return int(found.scalar_one())

    async def unfinished(self, platform: str | None = None) -> list[Turn]:
        """Queued or running turns, oldest first; only one platform's when given."""
        query = select(turns).join(sessions, sessions.c.id == turns.c.session_id).where(
            turns.c.state.in_(UNFINISHED))
        if platform is not None:
            query = query.where(sessions.c.platform == platform)
        rows = await self.conn.execute(query.order_by(turns.c.id))
        return [turn_from(r) for r in rows.mappings()]

    async def mark_running(self, turn_id: int, parent_turn_id: int | None) -> None:
        await self.conn.execute(update(turns).where(turns.c.id == turn_id).values(
            state=TurnState.RUNNING.value, parent_turn_id=parent_turn_id, started_at=utcnow()))

    async def finish(self, turn: Turn, state: TurnState, *,
                     model_content: dict[str, Any] | None = None, image_blob: str | None = None,
                     image_mime: str | None = None, text_reply: str | None = None,
                     reason: str | None = None, message: str | None = None,
                     usage: dict[str, Any] | None = None,
                     anchor_content: dict[str, Any] | None = None) -> Turn:
        """Record the outcome; a version gets the next number and becomes the head. The session's
        row is locked first, so two processes finishing turns of one session number in turn."""
        version = None
        if state is TurnState.DONE:
            await Sessions(self.conn).get(turn.session_id, for_update=True)
            version = await self.next_version(turn.session_id)
        now = utcnow()
        await self.conn.execute(update(turns).where(turns.c.id == turn.id).values(
            state=state.value, model_content=to_json(model_content), version=version,
            image_blob=image_blob, image_mime=image_mime, text_reply=text_reply, reason=reason,
            message=message, usage=to_json(usage), anchor_content=to_json(anchor_content),
            finished_at=now))
        if version is not None:
            await Sessions(self.conn).set_head(turn.session_id, turn.id)
        await announce(self.conn, turn.id)  # the session's next turn, and a slot, are free
        return await self.get(turn.id)

    async def mark_delivered(self, turn_id: int) -> None:
        await self.conn.execute(update(turns).where(turns.c.id == turn_id,
                                                    turns.c.delivered_at.is_(None)).values(delivered_at=utcnow()))

    async def undelivered(self, platform: str) -> list[Turn]:
        """Finished turns of a platform's sessions whose outcome was never shown in the thread
        (the process stopped in between): those that have a progress post, oldest first."""
        has_progress = exists().where(posts.c.turn_id == turns.c.id, posts.c.kind == "progress")
        rows = await self.conn.execute(
            select(turns).join(sessions, sessions.c.id == turns.c.session_id).where(
                sessions.c.platform == platform, turns.c.delivered_at.is_(None),
                turns.c.state.not_in(UNFINISHED), has_progress).order_by(turns.c.id))
        return [turn_from(r) for r in rows.mappings()]

    async def count_by_author_since(self, platform: str, workspace: str, author: str,
                                    since: str) -> tuple[int, str | None]:
        """How many turns `author` asked for in a workspace since `since`, and the oldest's time."""
        row = (await self.conn.execute(
            select(func.count(), func.min(turns.c.created_at))
            .select_from(turns).join(sessions, sessions.c.id == turns.c.session_id)
            .where(sessions.c.platform == platform, sessions.c.workspace == workspace,
                   turns.c.author == author, turns.c.created_at >= since))).one()
        return int(row[0]), row[1]


class Approvals(Repository):
    async def add(self, session_id: int, turn_id: int, by: str) -> bool:
        """Record `by`'s approval of the turn; False when they already approve it. The unique
        index approvals_one_active decides, so two approvals sent at once record one."""
        done = await self.conn.execute(upsert_insert(self.conn, approvals).values(
            session_id=session_id, turn_id=turn_id, approved_by=by, approved_at=utcnow(),
        ).on_conflict_do_nothing(index_elements=["turn_id", "approved_by"],
                                 index_where=approvals.c.withdrawn_at.is_(None))
            .returning(approvals.c.id))
        return done.first() is not None

    async def withdraw(self, turn_id: int, approved_by: str, by: str) -> int:
        done = await self.conn.execute(update(approvals).where(
            approvals.c.turn_id == turn_id, approvals.c.approved_by == approved_by,
            approvals.c.withdrawn_at.is_(None)).values(withdrawn_by=by, withdrawn_at=utcnow()))
        return int(done.rowcount)

    async def of_session(self, session_id: int) -> list[Any]:
        rows = await self.conn.execute(
            select(approvals).where(approvals.c.session_id == session_id).order_by(approvals.c.id))
        return [approval_from(r) for r in rows.mappings()]


class AuditLog(Repository):
    async def record(self, session_id: int | None, actor: str, action: str, outcome: str,
                     **detail: Any) -> None:
        await self.conn.execute(audit_log.insert().values(
            session_id=session_id, actor=actor, action=action, outcome=outcome,
            detail=to_json(detail) or "{}", at=utcnow()))

    async def of_session(self, session_id: int) -> list[dict[str, Any]]:
        rows = await self.conn.execute(
            select(audit_log).where(audit_log.c.session_id == session_id).order_by(audit_log.c.id))
        return [{"actor": r["actor"], "action": r["action"], "outcome": r["outcome"],
                 "detail": json.loads(r["detail"]), "at": r["at"]} for r in rows.mappings()]
