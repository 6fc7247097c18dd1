"""One way to open the store's database: an SQLAlchemy AsyncEngine for SQLite or PostgreSQL.

`THREADEDIT_DATABASE_URL` selects it: `sqlite+aiosqlite:///<path>` (the default, a file in the
data directory) or `postgresql+psycopg://user:password@host:5432/db` (psycopg 3, async).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# StoreUnavailable: one error for a store that cannot be reached or opened, whichever engine;
# its message is one sentence naming where (never a password) and what to do.
from bot.storage.db import StoreUnavailable, create_private_file, make_private_dir, unusable_database

# Several processes (CLI calls, the bot, the playground) may share one SQLite file: wait this
# long for another's write lock instead of failing at once.
SQLITE_BUSY_TIMEOUT_MS = 10_000
# An unreachable PostgreSQL host (a dropped packet, not a refusal) fails after this long.
PG_CONNECT_TIMEOUT_SECONDS = 10
POSTGRES_DEFAULT_PORT = 5432


class MigrationError(Exception):
    """The store's schema cannot be brought up to date; the message is one sentence and
    nothing was changed."""


def sqlite_url(path: Path) -> str:
    """The URL of the SQLite file at `path` (made absolute)."""
    return URL.create("sqlite+aiosqlite", database=str(path.resolve())).render_as_string()


def sqlite_path(url: str | URL) -> Path | None:
    """The file of an SQLite URL; None for another engine or an in-memory database."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or u.database in (None, "", ":memory:"):
        return None
    return Path(u.database)


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str | URL, *, sqlite_foreign_keys: bool = True,
                sqlite_begin: str = "BEGIN", **engine_kw: Any) -> AsyncEngine:
    """The engine for `url`.

    SQLite: the file (and its directory) is created readable by its owner only; every connection
    gets WAL, foreign keys on (off only for migrations, see bot/storage/migrate.py), synchronous
    NORMAL and a busy timeout. SQLAlchemy emits `sqlite_begin` itself (Python's sqlite3 module
    would otherwise start no transaction before a SELECT or DDL statement); a connection may ask
    for "BEGIN IMMEDIATE" with `execution_options(sqlite_begin=...)` to take the write lock
    first, which avoids SQLITE_BUSY when two processes upgrade a read to a write at once.

    PostgreSQL: psycopg 3 with prepared statements off (`prepare_threshold=None`), so it works
    behind PgBouncer in transaction mode; connections are checked before use, so a restarted
    server costs a reconnect rather than an error.
    """
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        path = sqlite_path(u)
        if path is not None:
            make_private_dir(path.parent)
            create_private_file(path)
        engine = create_async_engine(u, **engine_kw)
        _configure_sqlite(engine, sqlite_foreign_keys, sqlite_begin)
        return engine
    if backend == "postgresql":
        if u.get_driver_name() != "psycopg":
            raise StoreUnavailable(
                f"THREADEDIT_DATABASE_URL names the PostgreSQL driver {u.get_driver_name()!r}; "
                "use postgresql+psycopg://user:password@host:5432/database.")
        connect_args = {"prepare_threshold": None, "connect_timeout": PG_CONNECT_TIMEOUT_SECONDS,
                        **engine_kw.pop("connect_args", {})}
        engine_kw.setdefault("pool_pre_ping", True)
        return create_async_engine(u, connect_args=connect_args, **engine_kw)
    raise StoreUnavailable(
        f"THREADEDIT_DATABASE_URL names the database {backend!r}; threadedit stores its data in "
        "SQLite (sqlite+aiosqlite:///path) or PostgreSQL (postgresql+psycopg://...).")


def _configure_sqlite(engine: AsyncEngine, foreign_keys: bool, begin: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Leave BEGIN to us (see "begin" below): the sqlite3 module's own transaction handling
        # does not begin before SELECT or DDL, so reads and schema changes would not be atomic.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", begin))


def where(url: str | URL) -> str:
    """Where the database is, for messages: the file, or host and port (never the password)."""
    u = make_url(url)
    path = sqlite_path(u)
    if u.get_backend_name() == "sqlite":
        return f"the SQLite file {path}" if path else "an in-memory SQLite database"
    host = u.host or u.query.get("host") or "the local socket"
    return f"PostgreSQL at {host}:{u.port or POSTGRES_DEFAULT_PORT}"


# Known causes, matched in the driver's message, said in our words: the driver's own text may
# echo parts of the connection string, so none of it is repeated.
_CAUSES = [
    ("connection refused", "nothing is listening there (connection refused)"),
    ("timeout expired", "it did not answer in time"),
    ("timed out", "it did not answer in time"),
    ("could not translate host name", "the host name does not resolve"),
    ("name or service not known", "the host name does not resolve"),
    ("password authentication failed", "the user name or password was refused"),
    ("no password supplied", "it asks for a password and the URL has none"),
    ("no pg_hba.conf entry", "the server does not accept connections from this host and user"),
    ("does not exist", "the database or user named in the URL does not exist"),
    ("too many connections", "it has no free connection slots"),
    ("the database system is starting up", "it is still starting up"),
    ("the database system is shutting down", "it is shutting down"),
    ("unable to open database file", "the file cannot be opened (check the path and permissions)"),
    ("database is locked", "another process holds it locked"),
    ("permission denied", "it cannot be written here (permission denied)"),
    ("not a directory", "its folder cannot be made (a file is in the way)"),
    ("file exists", "its folder cannot be made (a file is in the way)"),
    ("read-only file system", "it is on a read-only file system"),
    ("no space left", "the disk is full"),
]


def describe_connection_error(url: str | URL, exc: BaseException) -> str:
    """One sentence saying why the database at `url` cannot be used, naming host and port (or
    the file), never the password."""
    text = " ".join(str(a) for a in getattr(exc, "args", ()) or (exc,)).lower()
    orig = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's exception
    if orig is not None:
        text += " " + str(orig).lower()
    cause = next((said for found, said in _CAUSES if found in text),
                 f"the connection failed ({type(orig or exc).__name__})")
    return f"Cannot open the store: {where(url)}: {cause}."


def store_error(url: str | URL, exc: BaseException) -> StoreUnavailable:
    """The one-sentence error for a store that cannot be opened or used: for an SQLite file, the
    sentences every command has given for a damaged or unwritable file; otherwise where the
    database is and why it cannot be reached."""
    orig = getattr(exc, "orig", None) or exc
    path = sqlite_path(url)
    if path is not None and isinstance(orig, sqlite3.Error):
        return unusable_database(path, orig)
    return StoreUnavailable(describe_connection_error(url, exc))
