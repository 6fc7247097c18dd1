"""Bring a store's schema up to date with Alembic (migrations/), on SQLite or PostgreSQL.

A data directory made by the release whose schema ended at migrations/0007_uploaded_files.sql
(its `schema_migrations` table lists 1..7) already holds the baseline's tables and columns: it
is adopted (its tables rebuilt in the baseline's exact shape, every row kept; see
bot/storage/legacy_sqlite.py) and stamped at the baseline, in one transaction, and later
revisions apply from there. An older one (1..n, n < 7) is first brought to 7 by those .sql
files, as that release would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import NullPool

from bot.storage import legacy_sqlite
from bot.storage.engine import MigrationError, make_engine, store_error
from bot.storage.schema import metadata

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
BASELINE = "0008_baseline"
HEAD = "0011_unshown_outcomes"  # the newest revision in migrations/versions
# Every revision from the baseline to HEAD, in order: what a new store is brought through.
REVISIONS = ("0008_baseline", "0009_one_active_approval", "0010_turn_leases",
             "0011_unshown_outcomes")
# Two processes starting at once on one PostgreSQL store: the second waits for the first's
# upgrade instead of both creating tables. Any fixed 64-bit number; this one spells "thrededt".
_PG_LOCK_KEY = 0x7468726564656474


def alembic_config() -> Config:
    """Alembic's configuration without an ini file: only where the scripts are."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


@asynccontextmanager
async def migration_connection(url: str | URL) -> AsyncIterator[AsyncConnection]:
    """A connection inside the one transaction a migration runs in, committed at the end.

    SQLite: foreign keys are OFF on it, because batch mode replaces a table by copying it and
    dropping the old one, and with foreign keys on that DROP deletes (cascading) every row that
    refers to it; the keys are checked (`PRAGMA foreign_key_check`) before the commit instead.
    BEGIN IMMEDIATE takes the write lock first, so two processes upgrading queue rather than
    fail. PostgreSQL: DDL is transactional; an advisory lock makes a second process wait.
    """
    try:
        engine = make_engine(url, sqlite_foreign_keys=False, sqlite_begin="BEGIN IMMEDIATE",
                             poolclass=NullPool)
    except OSError as exc:  # the SQLite file or its folder cannot be made
        raise store_error(url, exc) from None
    try:
        try:
            conn = await engine.connect()
        except (DBAPIError, OSError) as exc:
            raise store_error(url, exc) from None
        try:
            async with conn.begin():
                if conn.dialect.name == "postgresql":
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
                yield conn
                if conn.dialect.name == "sqlite":
                    broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
                    if broken:
                        raise MigrationError(
                            f"The migration would leave {len(broken)} rows pointing at rows that "
                            f"do not exist (first: table {broken[0][0]}, row {broken[0][1]}); "
                            "nothing was changed.")
        finally:
            await conn.close()
    finally:
        await engine.dispose()


async def upgrade(url: str | URL) -> list[str]:
    """Bring the store at `url` to the newest revision; return what was done, in order (a
    revision id, or "<id> (stamped)" for an SQLite store from the .sql migrations, adopted at
    that revision). Running it again does nothing and returns []."""
    await legacy_sqlite.finish_sql_migrations(url)
    try:
        async with migration_connection(url) as conn:
            return await conn.run_sync(_upgrade)
    except DBAPIError as exc:  # a damaged SQLite file, a server gone mid-way: one sentence
        raise store_error(url, exc) from None


def _upgrade(conn: Connection) -> list[str]:
    done: list[str] = []

    def record(*, step: Any, **_: Any) -> None:
        done.append(f"{step.up_revision_id} (stamped)" if step.is_stamp else step.up_revision_id)

    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    cfg.attributes["on_version_apply"] = [record]
    tables = set(inspect(conn).get_table_names())
    if "alembic_version" not in tables:
        if "schema_migrations" in tables and conn.dialect.name == "sqlite":
            legacy_sqlite.adopt(conn, legacy_sqlite.sqlite_shape_at(BASELINE))
            command.stamp(cfg, BASELINE)
        elif tables & set(metadata.tables):
            raise MigrationError(
                f"The database has threadedit's tables ({', '.join(sorted(tables & set(metadata.tables)))})"
                " but no record of its migrations; give threadedit an empty database.")
    command.upgrade(cfg, "head")
    return done
