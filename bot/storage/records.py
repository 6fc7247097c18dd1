"""Repositories for what the chat adapters and the spend and upload caches record: inbound event
keys, posts, app state, usage rows, uploaded files. Same form as bot/storage/repositories.py."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import case, delete, func, literal, select, update

from bot.storage.db import utcnow
from bot.storage.repositories import Repository
from bot.storage.rows import Row, upsert_insert
from bot.storage.schema import app_state, inbound_events, posts, uploaded_files, usage

_CHUNK = 500  # URIs per DELETE: well under SQLite's limit on parameters in one statement


class InboundEvents(Repository):
    async def claim(self, platform: str, event_key: str) -> bool:
        """True the first time a platform event is seen; False for every redelivery."""
        # RETURNING, not rowcount: psycopg's async cursor reports no count for an INSERT.
        done = await self.conn.execute(upsert_insert(self.conn, inbound_events).values(
            platform=platform, event_key=event_key, received_at=utcnow(),
        ).on_conflict_do_nothing(index_elements=["platform", "event_key"])
            .returning(inbound_events.c.event_key))
        return done.first() is not None

    async def seen(self, platform: str, event_key: str) -> bool:
        found = await self.conn.execute(select(literal(1)).where(
            inbound_events.c.platform == platform, inbound_events.c.event_key == event_key))
        return found.first() is not None

    async def release(self, platform: str, event_key: str) -> None:
        await self.conn.execute(delete(inbound_events).where(
            inbound_events.c.platform == platform, inbound_events.c.event_key == event_key))


class Posts(Repository):
    async def record(self, platform: str, channel: str, message_id: str, session_id: int,
                     turn_id: int | None, kind: str) -> None:
        await self.conn.execute(upsert_insert(self.conn, posts).values(
            platform=platform, channel=channel, message_id=message_id, session_id=session_id,
            turn_id=turn_id, kind=kind, created_at=utcnow(),
        ).on_conflict_do_nothing(index_elements=["platform", "channel", "message_id"]))

    async def find(self, platform: str, channel: str, message_id: str) -> dict[str, Any] | None:
        row = (await self.conn.execute(select(posts).where(
            posts.c.platform == platform, posts.c.channel == channel,
            posts.c.message_id == message_id))).mappings().first()
        return dict(row) if row else None

    async def of_turn(self, turn_id: int, kind: str) -> str | None:
        found = await self.conn.execute(select(posts.c.message_id).where(
            posts.c.turn_id == turn_id, posts.c.kind == kind).order_by(posts.c.id).limit(1))
        return found.scalar_one_or_none()


class AppState(Repository):
    async def get(self, name: str) -> str | None:
        found = await self.conn.execute(select(app_state.c.value).where(app_state.c.name == name))
        return found.scalar_one_or_none()

    async def set(self, name: str, value: str) -> None:
        insert = upsert_insert(self.conn, app_state).values(name=name, value=value, updated_at=utcnow())
        await self.conn.execute(insert.on_conflict_do_update(
            index_elements=["name"],
            set_={"value": insert.excluded.value, "updated_at": insert.excluded.updated_at}))


# What a usage row counts against a budget: its estimate while the call runs, then what it cost.
SPENT = func.sum(case((usage.c.state == "reserved", usage.c.reserved_usd), else_=usage.c.cost_usd))


class Usage(Repository):
    async def has(self, turn_id: int) -> bool:
        found = await self.conn.execute(select(literal(1)).where(usage.c.turn_id == turn_id))
        return found.first() is not None

    async def spent_on(self, platform: str, workspace: str, day: str) -> float:
        found = await self.conn.execute(select(func.coalesce(SPENT, 0.0)).where(
            usage.c.platform == platform, usage.c.workspace == workspace, usage.c.day == day))
        return float(found.scalar_one())

    async def reserve(self, **row: Any) -> None:
        await self.conn.execute(usage.insert().values(state="reserved", created_at=utcnow(), **row))

    async def settle(self, turn_id: int, state: str, cost_usd: float) -> None:
        await self.conn.execute(update(usage).where(usage.c.turn_id == turn_id,
                                                    usage.c.state == "reserved").values(
            state=state, cost_usd=cost_usd, settled_at=utcnow()))

    async def totals(self, since_day: str, by: tuple[str, ...]) -> list[dict[str, Any]]:
        """Spend since a UTC date grouped by the columns `by`, most first: usd (rounded to a
        hundredth of a cent), calls, and images (charged calls)."""
        cols = [usage.c[name] for name in by]
        images = func.sum(case((usage.c.state == "charged", 1), else_=0))
        rows = await self.conn.execute(
            select(*cols, SPENT.label("usd"), func.count().label("calls"), images.label("images"))
            .where(usage.c.day >= since_day).group_by(*cols).order_by(SPENT.desc()))
        return [{**{name: r[name] for name in by}, "usd": round(float(r["usd"]), 4),
                 "calls": int(r["calls"]), "images": int(r["images"])} for r in rows.mappings()]

    async def rows(self) -> list[dict[str, Any]]:
        """Every usage row, oldest first (for reports and tests)."""
        return [dict(r) for r in (await self.conn.execute(select(usage).order_by(usage.c.id))).mappings()]


class UploadedFileRows(Repository):
    async def get(self, blob_key: str) -> Row | None:
        found = await self.conn.execute(select(uploaded_files).where(uploaded_files.c.blob_key == blob_key))
        return found.mappings().first()

    async def put(self, blob_key: str, name: str, uri: str, mime: str, expires_at: str) -> None:
        """Remember an upload, replacing the blob's previous one."""
        insert = upsert_insert(self.conn, uploaded_files).values(
            blob_key=blob_key, name=name, uri=uri, mime=mime, expires_at=expires_at,
            uploaded_at=utcnow())
        await self.conn.execute(insert.on_conflict_do_update(
            index_elements=["blob_key"],
            set_={c: insert.excluded[c] for c in ("name", "uri", "mime", "expires_at", "uploaded_at")}))

    async def forget_uris(self, uris: Iterable[str]) -> int:
        """Drop the rows of these URIs; how many went."""
        wanted = list(dict.fromkeys(uris))
        gone = 0
        for i in range(0, len(wanted), _CHUNK):
            done = await self.conn.execute(delete(uploaded_files).where(
                uploaded_files.c.uri.in_(wanted[i:i + _CHUNK])))
            gone += int(done.rowcount)
        return gone
