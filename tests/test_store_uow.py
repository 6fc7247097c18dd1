"""The store's unit of work on both engines: one transaction per operation, rolled back whole,
retried after a lost connection, and versions numbered once across two processes' stores."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bot.domain import SessionKey, TurnKind, TurnState
from bot.storage.engine import sqlite_url
from bot.storage.repository import SessionStore
from bot.storage.schema import audit_log, sessions, turns
from bot.storage.uow import UnitOfWork
from bot.storage.usage import UsageLedger

KEY = SessionKey("slack", "T1", "C1", "1700000000.000100")
_STAMPS = {"created_at", "updated_at", "started_at", "finished_at", "approved_at", "withdrawn_at", "at"}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "data" / "threadedit.sqlite3")
    return str(request.getfixturevalue("pg_url"))


async def _edit(store: SessionStore, session_id: int, text: str, author: str = "ana") -> Any:
    session = await store.get_session(session_id)
    return await store.add_turn(session, kind=TurnKind.EDIT, instruction=text, author=author,
                                user_content={"parts": [{"text": text}], "role": "user"},
                                parent_turn_id=session.head_turn_id, model=session.model,
                                aspect=None, size="1K")


def without_stamps(value: Any, stamps: frozenset[str] | set[str] = _STAMPS) -> Any:
    """A value as plain data with the keys in `stamps` (timestamps, which differ between runs)
    dropped, for comparing two stores' answers."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: without_stamps(v, stamps) for k, v in value.items() if k not in stamps}
    if isinstance(value, list | tuple):
        return [without_stamps(v, stamps) for v in value]
    return value


async def _scenario(url: str) -> dict[str, Any]:
    """Every kind of store operation callers use, once, and what each answered."""
    store = await SessionStore.open(url)
    try:
        s = await store.create_session(KEY, "ana", "m1", None, "1K")
        again = await store.create_session(KEY, "bo", "m2", "16:9", "2K")  # the thread's session
        t1 = await _edit(store, s.id, "a lighthouse ✓")
        await store.mark_running(t1.id, None)
        done = await store.finish_turn(t1, TurnState.DONE, model_content={"parts": [{"text": "é"}]},
                                       image_blob="ab.jpg", image_mime="image/jpeg", usage={"n": 1})
        t2 = await _edit(store, s.id, "at night", author="bo")
        blocked = await store.finish_turn(t2, TurnState.BLOCKED, reason="safety", message="no")
        await store.add_approval(s.id, t1.id, "dana")
        await store.add_approval(s.id, t1.id, "eve")
        withdrawn = await store.withdraw_approval(t1.id, "dana", "dana")
        await store.audit(s.id, "ana", "edit", "ok", version=1, note="ü")
        await store.audit(None, "x", "message", "refused")
        await store.record_post("slack", "C1", "m.1", s.id, t1.id, "progress")
        await store.record_post("slack", "C1", "m.1", s.id, t1.id, "version")  # ignored: same message
        await store.record_post("slack", "C1", "m.2", s.id, t1.id, "version")
        claims = [await store.claim_event("slack", "e1"), await store.claim_event("slack", "e1")]
        await store.release_event("slack", "e1")
        claims.append(await store.claim_event("slack", "e1"))
        await store.set_app_state("cursor", "1")
        await store.set_app_state("cursor", "2")
        await store.update_settings(s.id, model="m3", aspect="1:1", size="2K")
        ledger = UsageLedger(store)
        reserved = [await ledger.reserve(s, t1, 0.05, 0.08), await ledger.reserve(s, t2, 0.05, 0.08)]
        await ledger.settle(t1.id, 0.04)
        await store.mark_delivered(t1.id)
        t3 = await _edit(store, s.id, "queued one")
        state = await store.load_state(s.id)
        return without_stamps({
            "same_session": again.id == s.id, "done": done, "blocked": blocked, "withdrawn": withdrawn,
            "state": state, "audit": await store.audit_log(s.id), "claims": claims,
            "post": await store.find_post("slack", "C1", "m.1"),
            "no_post": await store.find_post("slack", "C1", "x"),
            "post_for_turn": await store.post_for_turn(t1.id, "version"),
            "app_state": await store.get_app_state("cursor"), "none": await store.get_app_state("nope"),
            "next_version": await store.next_version(s.id),
            "waiting": await store.unfinished_before(s.id, t3.id),
            "unfinished": [t.id for t in await store.unfinished_turns("slack")],
            "unfinished_discord": await store.unfinished_turns("discord"),
            "undelivered": [t.id for t in await store.undelivered_turns("slack")],
            "sessions": await store.list_sessions(), "reserved": reserved,
            "spent": await ledger.spent_today(KEY), "report": await ledger.report("2000-01-01"),
            "turns_since": (await ledger.turns_since(KEY, "ana", _long_ago()))[0],
        })
    finally:
        await store.close()


def _long_ago() -> Any:
    from datetime import UTC, datetime

    return datetime(2000, 1, 1, tzinfo=UTC)


async def test_the_same_operations_give_the_same_results_on_both_engines(tmp_path: Path, pg_url: str) -> None:
    on_sqlite = await _scenario(sqlite_url(tmp_path / "data" / "threadedit.sqlite3"))
    on_postgres = await _scenario(pg_url)
    assert on_postgres == on_sqlite
    # And they are the right answers, not the same wrong ones.
    assert on_sqlite["claims"] == [True, False, True] and on_sqlite["withdrawn"] == 1
    assert on_sqlite["done"]["version"] == 1 and on_sqlite["blocked"]["version"] is None
    assert on_sqlite["post"]["kind"] == "progress" and on_sqlite["no_post"] is None
    assert on_sqlite["app_state"] == "2" and on_sqlite["next_version"] == 2
    assert on_sqlite["reserved"] == [True, False] and on_sqlite["spent"] == 0.04
    assert on_sqlite["report"]["users"] == [{"platform": "slack", "workspace": "T1", "user": "ana",
                                             "usd": 0.04, "calls": 1, "images": 1}]
    assert on_sqlite["undelivered"] == [] and on_sqlite["waiting"] == 0 and on_sqlite["turns_since"] == 2
    assert on_sqlite["audit"][0]["detail"] == {"version": 1, "note": "ü"}


async def _count(store: SessionStore, table: Any) -> int:
    return await store.read(lambda uow: _scalar(uow, select(func.count()).select_from(table)))


async def _scalar(uow: UnitOfWork, query: Any) -> Any:
    return (await uow.conn.execute(query)).scalar_one()


async def test_an_operation_that_fails_half_way_writes_nothing(url: str) -> None:
    store = await SessionStore.open(url)
    try:
        async def op(uow: UnitOfWork) -> None:
            session = await uow.sessions.create(KEY, "ana", "m", None, None)
            await uow.turns.add(session, kind=TurnKind.EDIT, instruction="x", author="ana",
                                user_content={}, parent_turn_id=None, model="m", aspect=None, size=None)
            await uow.audit.record(session.id, "ana", "edit", "ok")
            raise RuntimeError("the disk is full")

        with pytest.raises(RuntimeError, match="disk is full"):
            await store.transact(op)
        assert [await _count(store, t) for t in (sessions, turns, audit_log)] == [0, 0, 0]
        assert store.retries == 0  # not a lost connection: never run again
    finally:
        await store.close()


async def test_a_store_method_called_inside_a_transaction_is_refused(url: str) -> None:
    store = await SessionStore.open(url)
    try:
        async def op(uow: UnitOfWork) -> None:
            await uow.audit.record(None, "ana", "edit", "ok")
            await store.audit(None, "ana", "edit", "ok")  # would be a second transaction

        with pytest.raises(RuntimeError, match="inside a transaction"):
            await asyncio.wait_for(store.transact(op), 10)
        assert await _count(store, audit_log) == 0
    finally:
        await store.close()


def _terminate(url: str, pid: int | None = None) -> None:
    """Kill one server process (a backend), or every one of the database but this one, from a
    connection of its own: what a PostgreSQL restart or a dropped link does to the store."""
    u = make_url(url)
    with psycopg.connect(host=u.host, port=u.port, user=u.username, dbname=u.database,
                         autocommit=True) as conn:
        if pid is not None:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        else:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE datname = current_database() AND pid <> pg_backend_pid()")


async def test_an_operation_whose_connection_is_killed_mid_way_runs_again_and_lands_once(pg_url: str) -> None:
    store = await SessionStore.open(pg_url)
    attempts = 0
    try:
        async def op(uow: UnitOfWork) -> int:
            nonlocal attempts
            attempts += 1
            session = await uow.sessions.create(KEY, "ana", "m", None, None)
            await uow.audit.record(session.id, "ana", "edit", "ok")
            if attempts == 1:
                pid = (await uow.conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
                await asyncio.to_thread(_terminate, pg_url, pid)
            await uow.audit.record(session.id, "ana", "approve", "ok")
            return session.id

        session_id = await store.transact(op)
        assert attempts == 2 and store.retries == 1
        assert [a["action"] for a in await store.audit_log(session_id)] == ["edit", "approve"]
        assert await _count(store, sessions) == 1
    finally:
        await store.close()


async def test_connections_killed_between_operations_cost_nothing(pg_url: str) -> None:
    store = await SessionStore.open(pg_url)
    try:
        session = await store.create_session(KEY, "ana", "m", None, None)
        await asyncio.gather(*(store.audit(session.id, "ana", "edit", "ok") for _ in range(4)))  # a pool
        await asyncio.to_thread(_terminate, pg_url)
        await asyncio.gather(*(store.audit(session.id, "ana", "undo", "ok") for _ in range(4)))
        assert [a["action"] for a in await store.audit_log(session.id)] == ["edit"] * 4 + ["undo"] * 4
    finally:
        await store.close()


async def test_two_processes_finishing_turns_of_one_session_never_share_a_version(url: str) -> None:
    """Two stores (two engines, as two processes have) add turns of one session and finish them
    all at once: each version number is given once, and the head is the last."""
    first, second = await SessionStore.open(url), await SessionStore.open(url)
    per_store = 6
    try:
        session = await first.create_session(KEY, "ana", "m", None, None)
        added = await asyncio.gather(*(_edit(store, session.id, f"edit {i}")
                                       for i in range(per_store) for store in (first, second)))
        finished = await asyncio.wait_for(asyncio.gather(*(
            store.finish_turn(turn, TurnState.DONE, image_blob="b.jpg")
            for turn, store in zip(added, [first, second] * per_store, strict=True))), 60)
        assert sorted(t.version for t in finished) == list(range(1, 2 * per_store + 1))
        state = await first.load_state(session.id)
        assert state.session.head_turn_id == max(state.turns, key=lambda t: t.version or 0).id
    finally:
        await first.close()
        await second.close()
