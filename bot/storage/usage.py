"""UsageLedger: the spend of every model call and the turns each user asked for, in SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aiosqlite

from bot.domain import Session, SessionKey, Turn
from bot.storage.db import utcnow
from bot.storage.repository import SessionStore

# What a row counts against a budget: its estimate while the call runs, then what it cost.
SPENT = "SUM(CASE state WHEN 'reserved' THEN reserved_usd ELSE cost_usd END)"


async def _spent_on(db: aiosqlite.Connection, key: SessionKey, day: str) -> float:
    async with db.execute(
        f"SELECT COALESCE({SPENT}, 0) FROM usage WHERE platform=? AND workspace=? AND day=?",
        (key.platform, key.workspace, day),
    ) as cur:
        row = await cur.fetchone()
    return float(row[0]) if row else 0.0


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


class UsageLedger:
    def __init__(self, store: SessionStore) -> None:
        self.store = store

    async def turns_since(self, key: SessionKey, author: str, since: datetime) -> tuple[int, str | None]:
        """How many turns `author` asked for in this workspace since `since`, and the oldest's time."""
        async with self.store.db.execute(
            "SELECT COUNT(*), MIN(t.created_at) FROM turns t JOIN sessions s ON s.id = t.session_id"
            " WHERE s.platform=? AND s.workspace=? AND t.author=? AND t.created_at >= ?",
            (key.platform, key.workspace, author, since.isoformat(timespec="milliseconds")),
        ) as cur:
            row = await cur.fetchone()
        return (int(row[0]), row[1]) if row else (0, None)

    async def reserve(self, session: Session, turn: Turn, usd: float,
                      budget: float | None) -> bool:
        """Reserve `usd` for the turn unless that would pass the workspace's budget for today.
        A turn reserves once: a resumed turn keeps its first reservation."""
        day = _today()
        async with self.store.transaction() as db:
            async with db.execute("SELECT 1 FROM usage WHERE turn_id=?", (turn.id,)) as cur:
                if await cur.fetchone():
                    return True
            if budget is not None and await _spent_on(db, session.key, day) + usd > budget + 1e-9:
                return False
            await db.execute(
                "INSERT INTO usage (turn_id, session_id, platform, workspace, user, model, image_size,"
                " reserved_usd, state, day, created_at) VALUES (?,?,?,?,?,?,?,?,'reserved',?,?)",
                (turn.id, session.id, session.key.platform, session.key.workspace, turn.author, turn.model,
                 turn.image_size, usd, day, utcnow()))
        return True

    async def spent_today(self, key: SessionKey) -> float:
        return await _spent_on(self.store.db, key, _today())

    async def settle(self, turn_id: int, cost_usd: float | None) -> None:
        """Charge the actual cost, or refund (None) when the call made no image."""
        state = "refunded" if cost_usd is None else "charged"
        async with self.store.transaction() as db:
            await db.execute(
                "UPDATE usage SET state=?, cost_usd=?, settled_at=? WHERE turn_id=? AND state='reserved'",
                (state, cost_usd or 0.0, utcnow(), turn_id))

    async def report(self, since_day: str) -> dict[str, list[dict[str, Any]]]:
        """Spend since a UTC date by workspace, by user and by session (charged and still reserved)."""
        groups = {
            "workspaces": "platform, workspace",
            "users": "platform, workspace, user",
            "sessions": "platform, workspace, session_id",
        }
        out: dict[str, list[dict[str, Any]]] = {}
        for name, cols in groups.items():
            async with self.store.db.execute(
                f"SELECT {cols}, ROUND({SPENT}, 4) AS usd, COUNT(*) AS calls,"
                f" SUM(state = 'charged') AS images FROM usage WHERE day >= ?"
                f" GROUP BY {cols} ORDER BY usd DESC", (since_day,),
            ) as cur:
                names = [d[0] for d in cur.description]
                out[name] = [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]
        return out


def hour_ago() -> datetime:
    return datetime.now(UTC) - timedelta(hours=1)
