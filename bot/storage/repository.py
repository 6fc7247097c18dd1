"""SessionStore: the repository for sessions, turns, approvals and the audit log in SQLite."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from bot.domain import (
    Approval,
    Session,
    SessionKey,
    SessionState,
    Turn,
    TurnKind,
    TurnState,
    UnknownSession,
)
from bot.storage.db import open_database, utcnow

_SET_HEAD = "UPDATE sessions SET head_turn_id=?, updated_at=? WHERE id=?"


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _session(row: aiosqlite.Row) -> Session:
    return Session(
        id=row["id"],
        key=SessionKey(row["platform"], row["workspace"], row["channel"], row["thread"]),
        model=row["model"],
        aspect_ratio=row["aspect_ratio"],
        image_size=row["image_size"],
        head_turn_id=row["head_turn_id"],
        started_by=row["started_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _turn(row: aiosqlite.Row) -> Turn:
    return Turn(
        id=row["id"],
        session_id=row["session_id"],
        parent_turn_id=row["parent_turn_id"],
        kind=TurnKind(row["kind"]),
        instruction=row["instruction"],
        author=row["author"],
        user_content=json.loads(row["user_content"]),
        state=TurnState(row["state"]),
        model=row["model"],
        aspect_ratio=row["aspect_ratio"],
        image_size=row["image_size"],
        created_at=row["created_at"],
        model_content=json.loads(row["model_content"]) if row["model_content"] else None,
        version=row["version"],
        image_blob=row["image_blob"],
        image_mime=row["image_mime"],
        text_reply=row["text_reply"],
        reason=row["reason"],
        message=row["message"],
        usage=json.loads(row["usage"]) if row["usage"] else None,
        anchor_content=json.loads(row["anchor_content"]) if row["anchor_content"] else None,
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


class SessionStore:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        # One connection serves every task; a transaction must not take in another task's
        # statements, so each write runs as its own transaction under this lock.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> SessionStore:
        return cls(await open_database(path))

    async def close(self) -> None:
        await self.db.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        # IMMEDIATE takes the write lock up front, so two processes numbering versions at once
        # wait for each other instead of both reading the same maximum.
        async with self._lock:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            await self.db.execute("COMMIT")

    async def _write(self, sql: str, args: tuple[Any, ...] = ()) -> aiosqlite.Cursor:
        async with self.transaction() as db:
            return await db.execute(sql, args)

    async def _one(self, sql: str, args: tuple[Any, ...] = ()) -> aiosqlite.Row | None:
        async with self.db.execute(sql, args) as cur:
            return await cur.fetchone()

    async def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[aiosqlite.Row]:
        async with self.db.execute(sql, args) as cur:
            return list(await cur.fetchall())

    # Sessions

    async def find_session(self, key: SessionKey) -> Session | None:
        row = await self._one(
            "SELECT * FROM sessions WHERE platform=? AND workspace=? AND channel=? AND thread=?",
            (key.platform, key.workspace, key.channel, key.thread),
        )
        return _session(row) if row else None

    async def create_session(
        self, key: SessionKey, started_by: str, model: str, aspect: str | None, size: str | None
    ) -> Session:
        now = utcnow()
        await self._write(
            "INSERT INTO sessions (platform, workspace, channel, thread, model, aspect_ratio,"
            " image_size, started_by, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT (platform, workspace, channel, thread) DO NOTHING",
            (key.platform, key.workspace, key.channel, key.thread, model, aspect, size,
             started_by, now, now),
        )
        session = await self.find_session(key)
        assert session is not None
        return session

    async def get_session(self, session_id: int) -> Session:
        row = await self._one("SELECT * FROM sessions WHERE id=?", (session_id,))
        if row is None:
            raise UnknownSession(session_id)
        return _session(row)

    async def list_sessions(self, limit: int = 200) -> list[Session]:
        rows = await self._all("SELECT * FROM sessions ORDER BY updated_at DESC LIMIT ?", (limit,))
        return [_session(r) for r in rows]

    async def update_settings(
        self, session_id: int, *, model: str, aspect: str | None, size: str | None
    ) -> None:
        await self._write(
            "UPDATE sessions SET model=?, aspect_ratio=?, image_size=?, updated_at=? WHERE id=?",
            (model, aspect, size, utcnow(), session_id),
        )

    async def set_head(self, session_id: int, turn_id: int | None) -> None:
        await self._write(_SET_HEAD, (turn_id, utcnow(), session_id))

    async def load_state(self, session_id: int) -> SessionState:
        session = await self.get_session(session_id)
        turns = [
            _turn(r)
            for r in await self._all("SELECT * FROM turns WHERE session_id=? ORDER BY id", (session_id,))
        ]
        approvals = [
            Approval(r["turn_id"], r["approved_by"], r["approved_at"], r["withdrawn_by"], r["withdrawn_at"])
            for r in await self._all(
                "SELECT * FROM approvals WHERE session_id=? ORDER BY id", (session_id,)
            )
        ]
        return SessionState(session, turns, approvals)

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
        now = utcnow()
        async with self.transaction() as db:
            cur = await db.execute(
                "INSERT INTO turns (session_id, parent_turn_id, kind, instruction, author, user_content,"
                " state, model, aspect_ratio, image_size, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (session.id, parent_turn_id, kind.value, instruction, author, _json(user_content),
                 TurnState.QUEUED.value, model, aspect, size, now),
            )
            await db.execute("UPDATE sessions SET updated_at=? WHERE id=?", (now, session.id))
        assert cur.lastrowid is not None
        return await self.get_turn(cur.lastrowid)

    async def get_turn(self, turn_id: int) -> Turn:
        row = await self._one("SELECT * FROM turns WHERE id=?", (turn_id,))
        if row is None:
            raise KeyError(f"no turn {turn_id}")
        return _turn(row)

    async def next_version(self, session_id: int) -> int:
        """The number the session's next version will get (inside a transaction: will get)."""
        row = await self._one(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM turns WHERE session_id=?", (session_id,))
        assert row is not None
        return int(row[0])

    async def unfinished_before(self, session_id: int, turn_id: int) -> int:
        """How many earlier turns of the session are still queued or running."""
        row = await self._one(
            "SELECT COUNT(*) FROM turns WHERE session_id=? AND id<? AND state IN ('queued','running')",
            (session_id, turn_id))
        assert row is not None
        return int(row[0])

    async def unfinished_turns(self, platform: str | None = None) -> list[Turn]:
        """Queued or running turns, oldest first; only one platform's when given."""
        rows = await self._all(
            "SELECT t.* FROM turns t JOIN sessions s ON s.id = t.session_id"
            " WHERE t.state IN ('queued','running') AND (? IS NULL OR s.platform = ?) ORDER BY t.id",
            (platform, platform))
        return [_turn(r) for r in rows]

    async def mark_running(self, turn_id: int, parent_turn_id: int | None) -> None:
        await self._write(
            "UPDATE turns SET state='running', parent_turn_id=?, started_at=? WHERE id=?",
            (parent_turn_id, utcnow(), turn_id),
        )

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
        async with self.transaction() as db:
            version = await self.next_version(turn.session_id) if state is TurnState.DONE else None
            await db.execute(
                "UPDATE turns SET state=?, model_content=?, version=?, image_blob=?, image_mime=?,"
                " text_reply=?, reason=?, message=?, usage=?, anchor_content=?, finished_at=?"
                " WHERE id=?",
                (state.value, _json(model_content), version, image_blob, image_mime, text_reply,
                 reason, message, _json(usage), _json(anchor_content), utcnow(), turn.id),
            )
            if version is not None:
                await db.execute(_SET_HEAD, (turn.id, utcnow(), turn.session_id))
        return await self.get_turn(turn.id)

    # Approvals and audit

    async def add_approval(self, session_id: int, turn_id: int, by: str) -> None:
        await self._write(
            "INSERT INTO approvals (session_id, turn_id, approved_by, approved_at) VALUES (?,?,?,?)",
            (session_id, turn_id, by, utcnow()),
        )

    async def withdraw_approval(self, turn_id: int, approved_by: str, by: str) -> int:
        cur = await self._write(
            "UPDATE approvals SET withdrawn_by=?, withdrawn_at=? "
            "WHERE turn_id=? AND approved_by=? AND withdrawn_at IS NULL",
            (by, utcnow(), turn_id, approved_by),
        )
        return cur.rowcount

    async def audit(
        self, session_id: int | None, actor: str, action: str, outcome: str, **detail: Any
    ) -> None:
        await self._write(
            "INSERT INTO audit_log (session_id, actor, action, outcome, detail, at) VALUES (?,?,?,?,?,?)",
            (session_id, actor, action, outcome, _json(detail) or "{}", utcnow()),
        )

    async def audit_log(self, session_id: int) -> list[dict[str, Any]]:
        rows = await self._all("SELECT * FROM audit_log WHERE session_id=? ORDER BY id", (session_id,))
        return [
            {"actor": r["actor"], "action": r["action"], "outcome": r["outcome"],
             "detail": json.loads(r["detail"]), "at": r["at"]}
            for r in rows
        ]

    # Chat posts and inbound events

    async def claim_event(self, platform: str, event_key: str) -> bool:
        """True the first time a platform event is seen; False for every redelivery."""
        cur = await self._write(
            "INSERT OR IGNORE INTO inbound_events (platform, event_key, received_at) VALUES (?,?,?)",
            (platform, event_key, utcnow()),
        )
        return cur.rowcount == 1

    async def mark_delivered(self, turn_id: int) -> None:
        await self._write("UPDATE turns SET delivered_at=? WHERE id=? AND delivered_at IS NULL",
                          (utcnow(), turn_id))

    async def undelivered_turns(self, platform: str) -> list[Turn]:
        """Finished turns of a platform's sessions whose outcome was never shown in the thread
        (the process stopped in between): those that have a progress post, oldest first."""
        rows = await self._all(
            "SELECT t.* FROM turns t JOIN sessions s ON s.id = t.session_id"
            " WHERE s.platform = ? AND t.delivered_at IS NULL AND t.state NOT IN ('queued','running')"
            " AND EXISTS (SELECT 1 FROM posts p WHERE p.turn_id = t.id AND p.kind = 'progress')"
            " ORDER BY t.id", (platform,))
        return [_turn(r) for r in rows]

    async def release_event(self, platform: str, event_key: str) -> None:
        """Forget a claimed key, so the same key counts once more (a reaction added again)."""
        await self._write("DELETE FROM inbound_events WHERE platform=? AND event_key=?",
                          (platform, event_key))

    async def get_app_state(self, name: str) -> str | None:
        row = await self._one("SELECT value FROM app_state WHERE name=?", (name,))
        return row["value"] if row else None

    async def set_app_state(self, name: str, value: str) -> None:
        await self._write(
            "INSERT INTO app_state (name, value, updated_at) VALUES (?,?,?) "
            "ON CONFLICT(name) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
            (name, value, utcnow()))

    async def record_post(
        self, platform: str, channel: str, message_id: str, session_id: int, turn_id: int | None,
        kind: str,
    ) -> None:
        await self._write(
            "INSERT OR IGNORE INTO posts (platform, channel, message_id, session_id, turn_id, kind,"
            " created_at) VALUES (?,?,?,?,?,?,?)",
            (platform, channel, message_id, session_id, turn_id, kind, utcnow()),
        )

    async def find_post(self, platform: str, channel: str, message_id: str) -> aiosqlite.Row | None:
        return await self._one(
            "SELECT * FROM posts WHERE platform=? AND channel=? AND message_id=?",
            (platform, channel, message_id),
        )

    async def post_for_turn(self, turn_id: int, kind: str) -> str | None:
        row = await self._one(
            "SELECT message_id FROM posts WHERE turn_id=? AND kind=? ORDER BY id LIMIT 1",
            (turn_id, kind),
        )
        return row["message_id"] if row else None
