"""The store's schema (bot/storage/schema.py) and its migrations on SQLite: a new store, and a
real data directory made by the release whose schema ended at 0007, upgraded in place."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Column, Text

from bot.storage import legacy_sqlite
from bot.storage.engine import MigrationError, StoreUnavailable, make_engine, sqlite_url
from bot.storage.migrate import BASELINE, REVISIONS, migration_connection, upgrade
from bot.storage.schema import include_name, metadata

FIXTURE = Path(__file__).parent / "fixtures" / "datadir-0007"
UNMANAGED = ("schema_migrations", "alembic_version")


async def schema_differences(url: str) -> list[Any]:
    """What Alembic's autogenerate would change to make the database match schema.py."""
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(
                c, opts={"include_name": include_name, "compare_type": True,
                         "compare_server_default": True}), metadata))
    finally:
        await engine.dispose()


# Columns later revisions add to old rows, NULL on each: (table, column).
ADDED_SINCE_0007 = {("turns", "lease_owner"), ("turns", "lease_expires_at")}


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table with each value's SQLite storage class, in primary key order
    (the columns later revisions added are left out: `added_columns` reads those)."""
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT IN (?, ?)", UNMANAGED)]
        out = {}
        for t in tables:
            cols = [r[1] for r in db.execute(f'PRAGMA table_info("{t}")')
                    if (t, r[1]) not in ADDED_SINCE_0007]
            pk = [r[1] for r in sorted(db.execute(f'PRAGMA table_info("{t}")'), key=lambda r: r[5])
                  if r[5]]
            select = ", ".join(f'"{c}", typeof("{c}")' for c in sorted(cols))
            out[t] = db.execute(f'SELECT {select} FROM "{t}" ORDER BY '
                                + ", ".join(f'"{c}"' for c in pk)).fetchall()
    return out


def sqlite_schema(path: Path) -> set[tuple[str, str, str]]:
    with sqlite3.connect(path) as db:
        return set(db.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL"
                              " AND tbl_name NOT IN (?, ?)", UNMANAGED).fetchall())


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def old_data_dir(tmp_path: Path) -> Path:
    """A copy of the data directory the 0007 release wrote (tests/fixtures/make_datadir_0007.py)."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "old"))


async def test_a_new_sqlite_store_is_created_private_and_matches_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "data" / "threadedit.sqlite3"
    url = sqlite_url(path)
    assert await upgrade(url) == list(REVISIONS)
    assert await upgrade(url) == []  # idempotent
    assert await schema_differences(url) == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            pragmas = [(await conn.exec_driver_sql(f"PRAGMA {p}")).scalar_one()
                       for p in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")]
    finally:
        await engine.dispose()
    assert pragmas == ["wal", 1, 1, 10000]  # synchronous 1 = NORMAL


async def test_the_0007_data_directory_upgrades_in_place_with_every_row_kept(old_data_dir: Path) -> None:
    db_path = old_data_dir / "threadedit.sqlite3"
    before, files_before = dump(db_path), tree_digest(old_data_dir / "blobs")
    assert all(before[t] for t in metadata.tables), "the fixture should have rows in every table"

    assert await upgrade(sqlite_url(db_path)) == [f"{BASELINE} (stamped)", *REVISIONS[1:]]

    assert dump(db_path) == before  # every row, every value, every storage class
    with sqlite3.connect(db_path) as db:  # and the columns added since, empty on every old row
        assert db.execute("SELECT DISTINCT lease_owner, lease_expires_at FROM turns").fetchall() == [
            (None, None)]
    assert tree_digest(old_data_dir / "blobs") == files_before
    assert await schema_differences(sqlite_url(db_path)) == []
    assert await upgrade(sqlite_url(db_path)) == []
    # The adopted store has exactly a new store's tables, constraints and indexes, so later
    # migrations meet one shape; its inline ON DELETE CASCADE keys are now ones SQLAlchemy sees.
    new = old_data_dir.parent / "new" / "threadedit.sqlite3"
    await upgrade(sqlite_url(new))
    assert sqlite_schema(db_path) == sqlite_schema(new)
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT version FROM schema_migrations").fetchall() == [(n,) for n in range(1, 8)]


async def test_todays_store_code_still_opens_an_upgraded_data_directory(old_data_dir: Path) -> None:
    from bot.storage.repository import SessionStore

    db_path = old_data_dir / "threadedit.sqlite3"
    await upgrade(sqlite_url(db_path))
    store = await SessionStore.open(db_path)
    try:
        state = await store.load_state(1)
        assert [t.version for t in state.turns] == [1, 2, 3, 4, 5, None, None]
        assert [a.approved_by for a in state.approvals] == ["dana", "eve"]
    finally:
        await store.close()


async def test_a_batch_migration_on_an_adopted_store_loses_no_rows(old_data_dir: Path) -> None:
    """Batch mode replaces `sessions` by a copy; with foreign keys on, dropping the old table
    would cascade-delete every turn, approval, post and charge of every session."""
    db_path = old_data_dir / "threadedit.sqlite3"
    url = sqlite_url(db_path)
    await upgrade(url)
    before = dump(db_path)
    async with migration_connection(url) as conn:
        def add_column(c: Any) -> None:
            with Operations(MigrationContext.configure(c)).batch_alter_table(
                    "sessions", recreate="always") as batch:
                batch.add_column(Column("title", Text))
        await conn.run_sync(add_column)
    after = dump(db_path)
    assert {t: len(rows) for t, rows in after.items()} == {t: len(rows) for t, rows in before.items()}
    assert after["turns"] == before["turns"]


async def test_an_older_data_directory_gets_its_missing_sql_migrations_first(tmp_path: Path) -> None:
    older = tmp_path / "sql"
    older.mkdir()
    for _, _, path in legacy_sqlite.list_migrations()[:4]:  # a release from before 0005
        shutil.copy(path, older)
    db_path = tmp_path / "threadedit.sqlite3"
    assert len(legacy_sqlite.apply_sql_migrations(db_path, older)) == 4
    with sqlite3.connect(db_path) as db:
        db.execute("INSERT INTO app_state VALUES ('k', 'v', '2026-01-01T00:00:00.000+00:00')")

    assert await upgrade(sqlite_url(db_path)) == [f"{BASELINE} (stamped)", *REVISIONS[1:]]

    assert await schema_differences(sqlite_url(db_path)) == []
    with sqlite3.connect(db_path) as db:
        assert [r[0] for r in db.execute("SELECT version FROM schema_migrations")] == list(range(1, 8))
        assert db.execute("SELECT name, value FROM app_state").fetchall() == [("k", "v")]


async def test_a_store_with_unknown_sql_migrations_is_refused_and_left_alone(old_data_dir: Path) -> None:
    db_path = old_data_dir / "threadedit.sqlite3"
    with sqlite3.connect(db_path) as db:
        db.execute("INSERT INTO schema_migrations VALUES (8, '0008_future', 'x')")
    before = dump(db_path)
    with pytest.raises(MigrationError, match=r"versions \[1, 2, 3, 4, 5, 6, 7, 8\]"):
        await upgrade(sqlite_url(db_path))
    assert dump(db_path) == before
    with sqlite3.connect(db_path) as db:
        assert not db.execute("SELECT 1 FROM sqlite_master WHERE name='alembic_version'").fetchall()


async def test_a_database_with_our_tables_but_no_history_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE sessions (id INTEGER PRIMARY KEY)")
    with pytest.raises(MigrationError, match="no record of its migrations"):
        await upgrade(sqlite_url(path))


async def test_an_sqlite_file_that_cannot_be_made_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where the data folder should be")
    path = tmp_path / "taken" / "threadedit.sqlite3"
    with pytest.raises(StoreUnavailable) as caught:
        await upgrade(sqlite_url(path))
    # The same sentence every command gives for a data folder it cannot make (bot/storage/db.py).
    assert str(caught.value) == (f"Cannot create the folder {path.parent} (File exists); check "
                                 "THREADEDIT_DATA_DIR and that the folder it is in is writable.")


def test_every_sql_migration_is_in_the_baseline() -> None:
    """The .sql files are kept only to bring data directories from before 0007 there; a new
    schema change is an Alembic revision, never a new .sql file."""
    assert [n for n, _, _ in legacy_sqlite.list_migrations()] == legacy_sqlite.LEGACY_VERSIONS


async def test_a_store_made_by_the_sql_migrations_becomes_a_new_store(tmp_path: Path) -> None:
    made_by_sql = tmp_path / "sql" / "threadedit.sqlite3"
    made_by_sql.parent.mkdir()
    assert len(legacy_sqlite.apply_sql_migrations(made_by_sql)) == 7
    new = tmp_path / "new" / "threadedit.sqlite3"
    await upgrade(sqlite_url(new))
    assert await upgrade(sqlite_url(made_by_sql)) == [f"{BASELINE} (stamped)", *REVISIONS[1:]]
    assert sqlite_schema(made_by_sql) == sqlite_schema(new)
