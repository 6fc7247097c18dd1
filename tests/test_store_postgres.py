"""The store's schema and engine on a real PostgreSQL server (tests/postgres.py starts one)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, text

from bot.storage.engine import (
    StoreUnavailable,
    describe_connection_error,
    make_engine,
    sqlite_url,
)
from bot.storage.migrate import BASELINE, REVISIONS, upgrade
from bot.storage.schema import sessions, turns, usage
from tests import postgres
from tests.processes import free_port
from tests.test_store_schema import FIXTURE, schema_differences


async def test_upgrade_creates_the_schema_once(pg_url: str) -> None:
    assert await upgrade(pg_url) == list(REVISIONS)
    assert await upgrade(pg_url) == []
    assert await schema_differences(pg_url) == []
    engine = make_engine(pg_url)
    try:
        async with engine.connect() as conn:
            types = dict((await conn.execute(text(
                "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"
                " WHERE table_name IN ('turns', 'usage') AND column_name IN ('id', 'reserved_usd',"
                " 'created_at', 'version')"))).all())
    finally:
        await engine.dispose()
    assert types == {"turns.id": "bigint", "turns.created_at": "text", "turns.version": "integer",
                     "usage.id": "bigint", "usage.reserved_usd": "double precision",
                     "usage.created_at": "text"}


async def test_two_processes_upgrading_at_once_both_succeed(pg_url: str) -> None:
    done = await asyncio.wait_for(asyncio.gather(upgrade(pg_url), upgrade(pg_url)), 30)
    assert sorted(done) == [[], list(REVISIONS)]


async def test_rows_round_trip_and_statements_are_never_prepared(pg_url: str) -> None:
    await upgrade(pg_url)
    engine = make_engine(pg_url)
    now = "2026-12-05T09:08:35.296+00:00"
    try:
        async with engine.begin() as conn:
            sid = (await conn.execute(insert(sessions).returning(sessions.c.id), dict(
                platform="slack", workspace="T1", channel="C1", thread="1.2", model="m",
                started_by="U1", created_at=now, updated_at=now))).scalar_one()
            tid = (await conn.execute(insert(turns).returning(turns.c.id), dict(
                session_id=sid, kind="edit", instruction="Ünïcode ✓", author="U1",
                user_content='{"b":1,"a":[2]}', state="queued", model="m", created_at=now))).scalar_one()
            await conn.execute(insert(usage), dict(
                turn_id=tid, session_id=sid, platform="slack", workspace="T1", user="U1", model="m",
                reserved_usd=0.0452, state="reserved", day="2026-12-05", created_at=now))
            for _ in range(8):  # more than psycopg's default prepare_threshold of 5
                await conn.execute(select(func.count()).select_from(turns).where(turns.c.id == tid))
            prepared = (await conn.execute(text("SELECT count(*) FROM pg_prepared_statements"))).scalar_one()
            assert prepared == 0  # nothing a PgBouncer in transaction mode could lose
        async with engine.connect() as conn:
            row = (await conn.execute(select(turns.c.user_content, turns.c.instruction,
                                             turns.c.created_at))).one()
            spent = (await conn.execute(select(usage.c.reserved_usd, usage.c.cost_usd))).one()
    finally:
        await engine.dispose()
    assert tuple(row) == ('{"b":1,"a":[2]}', "Ünïcode ✓", now)  # JSON text kept byte for byte
    assert tuple(spent) == (0.0452, 0.0)


async def test_the_fixture_data_directory_and_a_postgres_store_meet_one_schema(
        pg_url: str, tmp_path: Path) -> None:
    """What `store copy` (a later change) starts from: both ends upgraded, one schema."""
    db_path = Path(shutil.copytree(FIXTURE, tmp_path / "old")) / "threadedit.sqlite3"
    assert await upgrade(sqlite_url(db_path)) == [f"{BASELINE} (stamped)", *REVISIONS[1:]]
    assert await upgrade(pg_url) == list(REVISIONS)
    assert await schema_differences(sqlite_url(db_path)) == []
    assert await schema_differences(pg_url) == []


async def test_an_unreachable_server_is_one_sentence_without_the_password() -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql+psycopg://threadedit:s3cret-Pa55@127.0.0.1:{port}/threadedit"
    with pytest.raises(StoreUnavailable) as caught:
        await upgrade(url)
    message = str(caught.value)
    assert message == (f"Cannot open the store: PostgreSQL at 127.0.0.1:{port}: nothing is "
                       "listening there (connection refused).")
    assert "s3cret" not in message and "\n" not in message


def test_a_driver_message_is_never_repeated() -> None:
    url = "postgresql+psycopg://u:hunter2@db.internal/x"
    said = describe_connection_error(url, RuntimeError("weird failure for u:hunter2@db.internal"))
    assert said == ("Cannot open the store: PostgreSQL at db.internal:5432: the connection failed"
                    " (RuntimeError).")


def test_without_the_server_binaries_the_tests_skip_except_under_ci(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "find_bin_dir", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install postgresql"):
        postgres.require_postgres()
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="apt-get install postgresql"):
        postgres.require_postgres()


async def test_the_cli_says_an_unreachable_server_in_one_sentence_and_exits_2(tmp_path: Path) -> None:
    from tests.processes import run_to_end
    from tests.test_cli import _env

    port = free_port()  # nothing listens there
    env = {**_env(tmp_path, THREADEDIT_ENGINE="local"),
           "THREADEDIT_DATABASE_URL": f"postgresql+psycopg://threadedit:s3cret-Pa55@127.0.0.1:{port}/te"}
    code, out, err = await run_to_end(tmp_path, env, "history", "1", timeout=30)
    assert (code, out) == (2, "")
    assert err == (f"Cannot open the store: PostgreSQL at 127.0.0.1:{port}: nothing is listening "
                   "there (connection refused).\n")
    assert not (tmp_path / "data" / "threadedit.sqlite3").exists()  # no SQLite store made instead
