"""An in-memory store for fast unit tests: the real SessionStore's API on dicts, no database.

As in "Architecture Patterns with Python" (FakeRepository, FakeUnitOfWork), the service and the
chat core are tested against a fake at the port they already have: `Store.transact(op)` and
`Store.read(op)` hand `op` a unit of work whose repositories (sessions, turns, approvals,
audit, events, posts, app_state, usage, uploads) answer exactly as the SQLAlchemy ones in
bot/storage/repositories.py and bot/storage/records.py do: the same method names and
signatures, the same domain objects and dicts. tests/test_store_contract.py runs the same
scenarios on this store and on a real SQLite one and holds the answers equal, and fails as soon
as a real repository has a method (or a signature) the fake does not.

MemoryStore subclasses SessionStore and replaces only how a transaction is run, so every
SessionStore method (each one `transact` or `read`) is the real one, inherited.

Transactions: `transact` runs `op` on a private copy of every table (cheap: rows are never
changed in place, see memory_tables.py) and makes it the store's tables only when `op`
returns; when it raises, the copy is dropped, so nothing of it lands. Writes are serialised by
a lock, as SQLite's BEGIN IMMEDIATE does; `read` sees the last committed tables and refuses
writes. A store method called from inside an op is refused, as on the real store.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.engine import URL

from bot.domain import FINISHED, Session, SessionKey, Turn, TurnKind, TurnState, UnknownSession
from bot.storage import uow as uow_module
from bot.storage.db import utcnow
from bot.storage.repository import SessionStore
from bot.storage.rows import Row, approval_from, session_from, to_json, turn_from
from bot.storage.uow import Op, UnitOfWork
from tests.fakes.memory_tables import MemoryDatabase, RowDict

T = TypeVar("T")
UNFINISHED = (TurnState.QUEUED.value, TurnState.RUNNING.value)
SESSION_KEY = ("platform", "workspace", "channel", "thread")


class NoConnection:
    """Stands where the real unit of work has its connection: there is no SQL to run here."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"the in-memory store has no database connection (uow.conn.{name}); "
                           "use the unit of work's repositories, or a test on the real store")


class MemoryRepository:
    def __init__(self, db: MemoryDatabase) -> None:
        self.db = db


# bot/storage/repositories.py


class MemorySessions(MemoryRepository):
    async def find(self, key: SessionKey) -> Session | None:
        row = self.db["sessions"].first(lambda r: (r["platform"], r["workspace"], r["channel"],
                                                   r["thread"]) == (key.platform, key.workspace,
                                                                    key.channel, key.thread))
        return session_from(row) if row else None

    async def get(self, session_id: int, *, for_update: bool = False) -> Session:
        row = self.db["sessions"].first(lambda r: r["id"] == session_id)
        if row is None:
            raise UnknownSession(session_id)
        return session_from(row)

    async def create(self, key: SessionKey, started_by: str, model: str, aspect: str | None,
                     size: str | None) -> Session:
        now = utcnow()
        self.db["sessions"].insert_or_ignore(
            self.db, SESSION_KEY, platform=key.platform, workspace=key.workspace,
            channel=key.channel, thread=key.thread, model=model, aspect_ratio=aspect,
            image_size=size, started_by=started_by, created_at=now, updated_at=now)
        session = await self.find(key)
        assert session is not None
        return session

    async def list(self, limit: int = 200) -> list[Session]:
        rows = self.db["sessions"].select(order_by=lambda r: (r["updated_at"], r["id"]), reverse=True)
        return [session_from(r) for r in rows[:limit]]

    async def update_settings(self, session_id: int, *, model: str, aspect: str | None,
                              size: str | None) -> None:
        self.db["sessions"].update(self.db, lambda r: r["id"] == session_id, model=model,
                                   aspect_ratio=aspect, image_size=size, updated_at=utcnow())

    async def set_head(self, session_id: int, turn_id: int | None) -> None:
        self.db["sessions"].update(self.db, lambda r: r["id"] == session_id, head_turn_id=turn_id,
                                   updated_at=utcnow())

    async def touch(self, session_id: int, now: str) -> None:
        self.db["sessions"].update(self.db, lambda r: r["id"] == session_id, updated_at=now)


class MemoryTurns(MemoryRepository):
    async def add(self, session: Session, *, kind: TurnKind, instruction: str, author: str,
                  user_content: dict[str, Any], parent_turn_id: int | None, model: str,
                  aspect: str | None, size: str | None) -> Turn:
        now = utcnow()
        row = self.db["turns"].insert(
            self.db, session_id=session.id, parent_turn_id=parent_turn_id, kind=kind.value,
            instruction=instruction, author=author, user_content=to_json(user_content),
            state=TurnState.QUEUED.value, model=model, aspect_ratio=aspect, image_size=size,
            created_at=now)
        await MemorySessions(self.db).touch(session.id, now)
        return await self.get(row["id"])

    async def get(self, turn_id: int) -> Turn:
        row = self.db["turns"].first(lambda r: r["id"] == turn_id)
        if row is None:
            raise KeyError(f"no turn {turn_id}")
        return turn_from(row)

    async def of_session(self, session_id: int) -> list[Turn]:
        return [turn_from(r) for r in self.db["turns"].select(lambda r: r["session_id"] == session_id)]

    async def next_version(self, session_id: int) -> int:
        versions = [r["version"] for r in self.db["turns"].select(
            lambda r: r["session_id"] == session_id and r["version"] is not None)]
        return max(versions, default=0) + 1

    async def unfinished_before(self, session_id: int, turn_id: int) -> int:
        return len(self.db["turns"].select(lambda r: r["session_id"] == session_id
                                           and r["id"] < turn_id and r["state"] in UNFINISHED))

    async def unfinished(self, platform: str | None = None) -> list[Turn]:
        return [turn_from(r) for r in self.db["turns"].select(
            lambda r: r["state"] in UNFINISHED and (platform is None or self._platform(r) == platform))]

    async def mark_running(self, turn_id: int, parent_turn_id: int | None) -> None:
        self.db["turns"].update(self.db, lambda r: r["id"] == turn_id, state=TurnState.RUNNING.value,
                                parent_turn_id=parent_turn_id, started_at=utcnow())

    async def finish(self, turn: Turn, state: TurnState, *,
                     model_content: dict[str, Any] | None = None, image_blob: str | None = None,
                     image_mime: str | None = None, text_reply: str | None = None,
                     reason: str | None = None, message: str | None = None,
                     usage: dict[str, Any] | None = None,
                     anchor_content: dict[str, Any] | None = None) -> Turn:
        version = None
        if state is TurnState.DONE:
            await MemorySessions(self.db).get(turn.session_id, for_update=True)
            version = await self.next_version(turn.session_id)
        self.db["turns"].update(
            self.db, lambda r: r["id"] == turn.id, state=state.value,
            model_content=to_json(model_content), version=version, image_blob=image_blob,
            image_mime=image_mime, text_reply=text_reply, reason=reason, message=message,
            usage=to_json(usage), anchor_content=to_json(anchor_content), finished_at=utcnow())
        if version is not None:
            await MemorySessions(self.db).set_head(turn.session_id, turn.id)
        return await self.get(turn.id)

    async def mark_delivered(self, turn_id: int) -> None:
        self.db["turns"].update(self.db, lambda r: r["id"] == turn_id and r["delivered_at"] is None,
                                delivered_at=utcnow())

    async def undelivered(self, platform: str) -> list[Turn]:
        progress = {r["turn_id"] for r in self.db["posts"].select(lambda r: r["kind"] == "progress")}
        return [turn_from(r) for r in self.db["turns"].select(
            lambda r: self._platform(r) == platform and r["delivered_at"] is None
            and r["state"] not in UNFINISHED and r["id"] in progress)]

    async def count_by_author_since(self, platform: str, workspace: str, author: str,
                                    since: str) -> tuple[int, str | None]:
        found = self.db["turns"].select(
            lambda r: r["author"] == author and r["created_at"] >= since
            and self._session_row(r)["platform"] == platform
            and self._session_row(r)["workspace"] == workspace)
        return len(found), min((r["created_at"] for r in found), default=None)

    def _session_row(self, turn_row: RowDict) -> RowDict:
        found = self.db["sessions"].first(lambda s: s["id"] == turn_row["session_id"])
        assert found is not None  # the foreign key holds
        return found

    def _platform(self, turn_row: RowDict) -> str:
        return str(self._session_row(turn_row)["platform"])


class MemoryApprovals(MemoryRepository):
    async def add(self, session_id: int, turn_id: int, by: str) -> bool:
        # ON CONFLICT DO NOTHING on the partial unique index of active approvals (turn, person).
        active = self.db["approvals"].first(lambda r: r["turn_id"] == turn_id and r["approved_by"] == by
                                            and r["withdrawn_at"] is None)
        if active is not None:
            return False
        self.db["approvals"].insert(self.db, session_id=session_id, turn_id=turn_id, approved_by=by,
                                    approved_at=utcnow())
        return True

    async def withdraw(self, turn_id: int, approved_by: str, by: str) -> int:
        return self.db["approvals"].update(
            self.db, lambda r: r["turn_id"] == turn_id and r["approved_by"] == approved_by
            and r["withdrawn_at"] is None, withdrawn_by=by, withdrawn_at=utcnow())

    async def of_session(self, session_id: int) -> list[Any]:
        return [approval_from(r) for r in self.db["approvals"].select(
            lambda r: r["session_id"] == session_id)]


class MemoryAuditLog(MemoryRepository):
    async def record(self, session_id: int | None, actor: str, action: str, outcome: str,
                     **detail: Any) -> None:
        self.db["audit_log"].insert(self.db, session_id=session_id, actor=actor, action=action,
                                    outcome=outcome, detail=to_json(detail) or "{}", at=utcnow())

    async def of_session(self, session_id: int) -> list[dict[str, Any]]:
        return [{"actor": r["actor"], "action": r["action"], "outcome": r["outcome"],
                 "detail": json.loads(r["detail"]), "at": r["at"]}
                for r in self.db["audit_log"].select(lambda r: r["session_id"] == session_id)]


# bot/storage/records.py


class MemoryInboundEvents(MemoryRepository):
    async def claim(self, platform: str, event_key: str) -> bool:
        return self.db["inbound_events"].insert_or_ignore(
            self.db, ("platform", "event_key"), platform=platform, event_key=event_key,
            received_at=utcnow())

    async def seen(self, platform: str, event_key: str) -> bool:
        return self.db["inbound_events"].first(
            lambda r: (r["platform"], r["event_key"]) == (platform, event_key)) is not None

    async def release(self, platform: str, event_key: str) -> None:
        self.db["inbound_events"].delete(lambda r: (r["platform"], r["event_key"]) == (platform, event_key))


class MemoryPosts(MemoryRepository):
    async def record(self, platform: str, channel: str, message_id: str, session_id: int,
                     turn_id: int | None, kind: str) -> None:
        self.db["posts"].insert_or_ignore(
            self.db, ("platform", "channel", "message_id"), platform=platform, channel=channel,
            message_id=message_id, session_id=session_id, turn_id=turn_id, kind=kind,
            created_at=utcnow())

    async def find(self, platform: str, channel: str, message_id: str) -> dict[str, Any] | None:
        return self.db["posts"].first(lambda r: (r["platform"], r["channel"], r["message_id"])
                                      == (platform, channel, message_id))

    async def of_turn(self, turn_id: int, kind: str) -> str | None:
        row = self.db["posts"].first(lambda r: r["turn_id"] == turn_id and r["kind"] == kind)
        return row["message_id"] if row else None


class MemoryAppState(MemoryRepository):
    async def get(self, name: str) -> str | None:
        row = self.db["app_state"].first(lambda r: r["name"] == name)
        return row["value"] if row else None

    async def set(self, name: str, value: str) -> None:
        self.db["app_state"].upsert(self.db, ("name",), name=name, value=value, updated_at=utcnow())


def _spent(row: RowDict) -> float:
    """What a usage row counts against a budget: its estimate while the call runs, then its cost."""
    return float(row["reserved_usd"] if row["state"] == "reserved" else row["cost_usd"])


class MemoryUsage(MemoryRepository):
    async def has(self, turn_id: int) -> bool:
        return self.db["usage"].first(lambda r: r["turn_id"] == turn_id) is not None

    async def spent_on(self, platform: str, workspace: str, day: str) -> float:
        return float(sum(_spent(r) for r in self.db["usage"].select(
            lambda r: (r["platform"], r["workspace"], r["day"]) == (platform, workspace, day))))

    async def reserve(self, **row: Any) -> None:
        self.db["usage"].insert(self.db, state="reserved", created_at=utcnow(), **row)

    async def settle(self, turn_id: int, state: str, cost_usd: float) -> None:
        self.db["usage"].update(self.db, lambda r: r["turn_id"] == turn_id and r["state"] == "reserved",
                                state=state, cost_usd=cost_usd, settled_at=utcnow())

    async def totals(self, since_day: str, by: tuple[str, ...]) -> list[dict[str, Any]]:
        groups: dict[tuple[Any, ...], list[RowDict]] = {}
        for r in self.db["usage"].select(lambda r: r["day"] >= since_day):
            groups.setdefault(tuple(r[name] for name in by), []).append(r)
        found = [{**dict(zip(by, group, strict=True)), "usd": sum(_spent(r) for r in rows),
                  "calls": len(rows), "images": sum(r["state"] == "charged" for r in rows)}
                 for group, rows in groups.items()]
        found.sort(key=lambda g: g["usd"], reverse=True)
        return [{**g, "usd": round(float(g["usd"]), 4)} for g in found]

    async def rows(self) -> list[dict[str, Any]]:
        return self.db["usage"].select()


class MemoryUploadedFileRows(MemoryRepository):
    async def get(self, blob_key: str) -> Row | None:
        return self.db["uploaded_files"].first(lambda r: r["blob_key"] == blob_key)

    async def put(self, blob_key: str, name: str, uri: str, mime: str, expires_at: str) -> None:
        self.db["uploaded_files"].upsert(self.db, ("blob_key",), blob_key=blob_key, name=name, uri=uri,
                                         mime=mime, expires_at=expires_at, uploaded_at=utcnow())

    async def forget_uris(self, uris: Iterable[str]) -> int:
        wanted = set(uris)
        return self.db["uploaded_files"].delete(lambda r: r["uri"] in wanted)


# bot/storage/queue.py

FINISHED_STATES = tuple(state.value for state in FINISHED)


class MemoryTurnQueue(MemoryRepository):
    def _takeable_rows(self, now: str, platforms: Collection[str] | None,
                       session_id: int | None) -> list[RowDict]:
        rows = self.db["turns"].select(lambda r: r["state"] in UNFINISHED)
        first_of_session: dict[int, RowDict] = {}
        for row in sorted(rows, key=lambda r: r["id"]):
            first_of_session.setdefault(row["session_id"], row)
        turns = MemoryTurns(self.db)
        return [r for r in sorted(first_of_session.values(), key=lambda r: r["id"])
                if (r["lease_expires_at"] is None or r["lease_expires_at"] <= now)
                and (platforms is None or turns._platform(r) in platforms)
                and (session_id is None or r["session_id"] == session_id)]

    async def takeable(self, now: str, platforms: Collection[str] | None, session_id: int | None,
                       limit: int) -> list[tuple[int, str]]:
        turns = MemoryTurns(self.db)
        rows = self._takeable_rows(now, platforms, session_id)[:limit]
        return [(r["id"], turns._platform(r)) for r in rows]

    async def count_takeable(self, now: str, platforms: Collection[str] | None,
                             session_id: int | None) -> int:
        return len(self._takeable_rows(now, platforms, session_id))

    async def held(self, now: str) -> int:
        return len(self.db["turns"].select(
            lambda r: r["state"] in UNFINISHED and r["lease_expires_at"] is not None
            and r["lease_expires_at"] > now))

    async def next_expiry(self, now: str) -> str | None:
        return min((r["lease_expires_at"] for r in self.db["turns"].select(
            lambda r: r["state"] in UNFINISHED and r["lease_expires_at"] is not None
            and r["lease_expires_at"] > now)), default=None)

    async def live_owners(self, now: str) -> list[str]:
        return sorted({r["lease_owner"] for r in self.db["turns"].select(
            lambda r: r["state"] in UNFINISHED and r["lease_expires_at"] is not None
            and r["lease_expires_at"] > now and r["lease_owner"] is not None)})

    async def end_leases_of(self, owners: Collection[str]) -> list[int]:
        ended = sorted(r["id"] for r in self.db["turns"].select(
            lambda r: r["lease_owner"] in set(owners) and r["state"] in UNFINISHED
            and r["lease_expires_at"] is not None))
        self.db["turns"].update(self.db, lambda r: r["id"] in set(ended), lease_expires_at=None)
        return ended

    async def take(self, turn_ids: Sequence[int], owner: str, until: str) -> None:
        wanted = set(turn_ids)
        self.db["turns"].update(self.db, lambda r: r["id"] in wanted, lease_owner=owner,
                                lease_expires_at=until)

    async def renew(self, turn_ids: Sequence[int], owner: str, until: str) -> list[int]:
        kept = [r["id"] for r in self.db["turns"].select(
            lambda r: r["id"] in set(turn_ids) and r["lease_owner"] == owner and r["state"] in UNFINISHED)]
        self.db["turns"].update(self.db, lambda r: r["id"] in set(kept), lease_expires_at=until)
        return sorted(kept)

    async def release(self, turn_ids: Sequence[int], owner: str) -> int:
        return self.db["turns"].update(
            self.db, lambda r: r["id"] in set(turn_ids) and r["lease_owner"] == owner
            and r["state"] in UNFINISHED, lease_expires_at=None)

    async def unshown(self, platforms: Collection[str]) -> list[tuple[int, str, str | None]]:
        turns = MemoryTurns(self.db)
        progress = {r["turn_id"] for r in self.db["posts"].select(lambda r: r["kind"] == "progress")}
        return [(r["id"], turns._platform(r), r["lease_owner"]) for r in sorted(
            self.db["turns"].select(lambda r: r["delivered_at"] is None and r["state"] in FINISHED_STATES
                                    and r["id"] in progress and turns._platform(r) in set(platforms)),
            key=lambda r: r["id"])]

    async def take_unshown(self, turn_id: int, owner: str, previous: str | None) -> bool:
        return self.db["turns"].update(
            self.db, lambda r: r["id"] == turn_id and r["delivered_at"] is None
            and r["state"] in FINISHED_STATES and r["lease_owner"] == previous,
            lease_owner=owner, lease_expires_at=None) == 1

    async def owner(self, turn_id: int) -> str | None:
        row = self.db["turns"].first(lambda r: r["id"] == turn_id)
        return None if row is None else row["lease_owner"]

    async def finished_among(self, turn_ids: Sequence[int]) -> list[int]:
        return sorted(r["id"] for r in self.db["turns"].select(
            lambda r: r["id"] in set(turn_ids) and r["state"] in FINISHED_STATES))


class MemoryUnitOfWork(UnitOfWork):
    """The in-memory counterpart of bot.storage.uow.UnitOfWork: the same repositories by name, and
    its own methods (load_state, ...) inherited, so they cannot drift from the real ones."""

    def __init__(self, db: MemoryDatabase) -> None:  # no super().__init__: there is no connection
        self.conn = NoConnection()
        self.db = db
        self.sessions = MemorySessions(db)
        self.turns = MemoryTurns(db)
        self.approvals = MemoryApprovals(db)
        self.audit = MemoryAuditLog(db)
        self.events = MemoryInboundEvents(db)
        self.posts = MemoryPosts(db)
        self.app_state = MemoryAppState(db)
        self.usage = MemoryUsage(db)
        self.uploads = MemoryUploadedFileRows(db)
        self.queue = MemoryTurnQueue(db)

    async def lock(self, name: str) -> None:
        return None  # transact already runs one operation at a time, like SQLite's write lock


class MemoryPresence:
    """Worker presence in memory (bot/storage/presence.py): a worker is gone once it dropped its
    presence or a test ended it with `end`; one never seen looks present."""

    def __init__(self) -> None:
        self.held: set[str] = set()
        self.ended: set[str] = set()

    async def hold(self, owner: str) -> None:
        self.held.add(owner)

    async def lost(self, owner: str) -> None:
        return None

    async def gone(self, conn: object, owners: Collection[str]) -> set[str]:
        return {owner for owner in owners if owner in self.ended}

    def end(self, owner: str) -> None:
        """The worker's process died."""
        self.held.discard(owner)
        self.ended.add(owner)

    async def drop(self, owner: str) -> None:
        self.end(owner)

    async def close(self) -> None:
        for owner in list(self.held):
            self.end(owner)


class MemoryStore(SessionStore):
    """SessionStore on in-memory tables: every method inherited, only transactions replaced."""

    def __init__(self) -> None:  # no super().__init__: there is no engine to hold
        self.engine = None  # type: ignore[assignment]
        self.url = "memory://"
        self.is_sqlite = False
        self._write_lock = asyncio.Lock()
        self.retries = 0
        self.presence = MemoryPresence()
        self.db = MemoryDatabase()
        self.commits = 0  # transactions that landed, and ones rolled back: for tests
        self.rollbacks = 0

    @classmethod
    async def open(cls, url: str | Path | URL = "memory://") -> MemoryStore:  # type: ignore[override]
        return cls()

    async def close(self) -> None:
        return None

    async def transact(self, op: Op[T]) -> T:
        self._refuse_nesting()
        async with self._write_lock:
            work = self.db.copy(writable=True)
            token = uow_module._inside.set(self)
            try:
                result = await op(MemoryUnitOfWork(work))  # type: ignore[arg-type]
            except BaseException:
                self.rollbacks += 1  # `work` is dropped: none of the op's writes land
                raise
            finally:
                uow_module._inside.reset(token)
            self.db = work
            self.commits += 1
            return result

    async def read(self, op: Op[T]) -> T:
        self._refuse_nesting()
        token = uow_module._inside.set(self)
        try:
            return await op(MemoryUnitOfWork(self.db.copy(writable=False)))  # type: ignore[arg-type]
        finally:
            uow_module._inside.reset(token)

    def rows(self, table: str) -> list[RowDict]:
        """A table's committed rows (for assertions about what landed)."""
        return self.db[table].select()
