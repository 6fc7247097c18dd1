"""Adopting an SQLite store made by the .sql migrations (0001..0007) into Alembic's history.

Such a store has the baseline's tables, columns and indexes, but its constraints are unnamed and
its foreign keys are written inline (`session_id INTEGER REFERENCES sessions(id) ON DELETE
CASCADE`). SQLAlchemy's SQLite reflection does not see ON DELETE on inline keys, and Alembic's
batch mode drops unnamed CHECK constraints, so a later batch migration on such a table would
silently lose its cascades and checks. Adoption therefore rebuilds each table in exactly the
shape the baseline revision gives a new store (SQLite's own "12-step" table rebuild: rename,
create, copy every row with its id, drop), inside the caller's transaction with foreign keys
off, then the caller stamps the baseline. Values are copied by SQLite itself, unconverted.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from bot.storage.db import utcnow
from bot.storage.engine import (
    MigrationError,
    is_sqlite,
    make_engine,
    sqlite_path,
    store_error,
    where,
)

LEGACY_VERSIONS = list(range(1, 8))  # the .sql migrations the baseline's schema includes
# Those migrations, as that release shipped them: only a data directory from before 0007 needs them.
SQL_MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
_SQL_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def list_migrations(directory: Path = SQL_MIGRATIONS_DIR) -> list[tuple[int, str, Path]]:
    """The .sql migrations in a folder: (number, name, file), numbered 1, 2, ... in order."""
    found = []
    for p in sorted(directory.glob("*.sql")):
        m = _SQL_NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p.stem, p))
    numbers = [n for n, _, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"migrations in {directory} are not numbered 0001, 0002, ...: {numbers}")
    return found


def apply_sql_migrations(path: Path, directory: Path = SQL_MIGRATIONS_DIR) -> list[str]:
    """Apply the .sql migrations the SQLite file at `path` lacks, each in its own transaction
    and recorded in schema_migrations, exactly as the release that shipped them did."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout=10000")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                   "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
        done = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
        applied = []
        for number, name, sql in list_migrations(directory):
            if number in done:
                continue
            script = (f"BEGIN;\n{sql.read_text()}\nINSERT INTO schema_migrations VALUES "
                      f"({number}, '{name}', '{utcnow()}');\nCOMMIT;")
            try:
                db.executescript(script)
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            applied.append(name)
        return applied
    finally:
        db.close()


def legacy_versions(conn: Connection) -> list[int] | None:
    """The .sql migrations applied to this store, when it has no Alembic history; else None."""
    tables = set(inspect(conn).get_table_names())
    if "schema_migrations" not in tables or "alembic_version" in tables:
        return None
    rows = conn.exec_driver_sql("SELECT version FROM schema_migrations ORDER BY version")
    return [int(r[0]) for r in rows]


async def finish_sql_migrations(url: str | URL) -> None:
    """A store from a release before 0007: apply its missing .sql files first, exactly as that
    release's bot/storage/db.py would have (each in its own transaction)."""
    path = sqlite_path(url) if is_sqlite(url) else None
    if path is None or not path.exists() or path.stat().st_size == 0:
        return
    engine = make_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            versions = await conn.run_sync(legacy_versions)
    except DBAPIError as exc:
        raise store_error(url, exc) from None
    finally:
        await engine.dispose()
    if versions is None or versions == LEGACY_VERSIONS:
        return
    if versions != LEGACY_VERSIONS[:len(versions)]:
        raise MigrationError(f"{where(url)} lists schema versions {versions}; this release can "
                            f"adopt only 1 to {LEGACY_VERSIONS[-1]}.")
    try:
        await asyncio.to_thread(apply_sql_migrations, Path(make_url(url).database or ""))
    except sqlite3.Error as exc:
        raise store_error(url, exc) from None


@dataclass(frozen=True)
class SqliteShape:
    """The tables (name, CREATE statement, columns in order) and indexes (name, CREATE
    statement) that a revision makes on a new SQLite database, in creation order."""

    tables: list[tuple[str, str, list[str]]]
    indexes: list[tuple[str, str]]


def sqlite_shape_at(revision: str) -> SqliteShape:
    """What `revision` makes on a new SQLite database: the revision itself is the one definition
    of that shape, so adoption needs no second copy of it."""
    from bot.storage.migrate import alembic_config

    scratch = create_engine("sqlite://", poolclass=NullPool)
    try:
        with scratch.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            rows = conn.exec_driver_sql(
                "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL"
                " AND name <> 'alembic_version' ORDER BY rowid").all()
            tables = [(name, sql, [c[1] for c in conn.exec_driver_sql(f'PRAGMA table_info("{name}")')])
                      for kind, name, sql in rows if kind == "table"]
    finally:
        scratch.dispose()
    return SqliteShape(tables, [(name, sql) for kind, name, sql in rows if kind == "index"])


def adopt(conn: Connection, shape: SqliteShape) -> None:
    """Rebuild the store's tables and indexes in `shape`, keeping every row and its id. The
    caller holds a transaction with foreign keys off and checks them before committing."""
    versions = legacy_versions(conn)
    if versions != LEGACY_VERSIONS:
        raise MigrationError(f"The store's schema_migrations lists versions {versions}; this "
                            f"release can adopt only 1 to {LEGACY_VERSIONS[-1]}.")
    insp = inspect(conn)
    for name, _, want in shape.tables:
        have = {c["name"] for c in insp.get_columns(name)}
        if have != set(want):
            raise MigrationError(f"The store's table {name} has columns {sorted(have)}, not the "
                                f"{sorted(want)} of schema version {LEGACY_VERSIONS[-1]}.")
    # Renaming must not rewrite other tables' REFERENCES to the old copy (SQLite >= 3.26 does
    # unless this is on): they name the table, which the rebuilt one becomes again.
    conn.exec_driver_sql("PRAGMA legacy_alter_table=ON")
    try:
        for name, _ in shape.indexes:
            conn.exec_driver_sql(f'DROP INDEX IF EXISTS "{name}"')
        for name, create, columns in shape.tables:
            cols = ", ".join(f'"{c}"' for c in columns)
            before = conn.exec_driver_sql(f'SELECT COUNT(*) FROM "{name}"').scalar_one()
            conn.exec_driver_sql(f'ALTER TABLE "{name}" RENAME TO "_adopting_{name}"')
            conn.exec_driver_sql(create)
            conn.exec_driver_sql(f'INSERT INTO "{name}" ({cols}) SELECT {cols} FROM "_adopting_{name}"')
            conn.exec_driver_sql(f'DROP TABLE "_adopting_{name}"')
            after = conn.exec_driver_sql(f'SELECT COUNT(*) FROM "{name}"').scalar_one()
            if after != before:
                raise MigrationError(f"Rebuilding table {name} kept {after} of its {before} rows; "
                                    "nothing was changed.")
        for _, create in shape.indexes:
            conn.exec_driver_sql(create)
    finally:
        conn.exec_driver_sql("PRAGMA legacy_alter_table=OFF")
