"""Opening the SQLite database: WAL, foreign keys, numbered migrations applied in order."""

from __future__ import annotations

import os
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class StoreUnavailable(Exception):
    """The data directory or the database cannot be used. The message is one sentence naming
    the path and what to do; nothing was changed."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def create_private_file(path: Path) -> None:
    """Create the database file readable by its owner only before SQLite opens it; SQLite gives
    its -wal and -shm files the database file's permissions."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        for made in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if made.exists():  # files an older version made with the umask's permissions
                os.chmod(made, 0o600)
    except OSError as exc:
        raise StoreUnavailable(
            f"Cannot open the database {path} for writing ({_reason(exc)}); check that it and its "
            "folder belong to this user and are writable, or set THREADEDIT_DATA_DIR.") from None


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def make_private_dir(path: Path) -> None:
    """Create the data directory readable by its owner only (it holds every image and prompt)."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise StoreUnavailable(
            f"Cannot create the folder {path} ({_reason(exc)}); check THREADEDIT_DATA_DIR "
            "and that the folder it is in is writable.") from None
    try:
        os.chmod(path, 0o700)
    except PermissionError:  # a directory we do not own; leave it as the owner set it
        pass


def list_migrations(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, str, Path]]:
    found = []
    for p in sorted(directory.glob("*.sql")):
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p.stem, p))
    numbers = [n for n, _, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"migrations in {directory} are not numbered 0001, 0002, ...: {numbers}")
    return found


async def apply_migrations(db: aiosqlite.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    await db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    async with db.execute("SELECT version FROM schema_migrations") as cur:
        done = {row[0] for row in await cur.fetchall()}
    applied = []
    for number, name, path in list_migrations(directory):
        if number in done:
            continue
        # One transaction per migration, so a failed one leaves the previous schema intact.
        script = f"BEGIN;\n{path.read_text()}\nINSERT INTO schema_migrations VALUES " \
                 f"({number}, '{name}', '{utcnow()}');\nCOMMIT;"
        try:
            await db.executescript(script)
        except Exception:
            await db.rollback()
            raise
        applied.append(name)
    return applied


async def open_database(path: Path) -> aiosqlite.Connection:
    make_private_dir(path.parent)
    create_private_file(path)
    try:
        db = await aiosqlite.connect(path, isolation_level=None)  # we manage transactions
    except sqlite3.Error as exc:
        raise unusable_database(path, exc) from None
    try:
        db.row_factory = aiosqlite.Row
        # Several processes (CLI calls, the bot) may share the file: wait for a lock, do not fail.
        await db.execute("PRAGMA busy_timeout=10000")
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA foreign_keys=ON")
        await db.execute("PRAGMA synchronous=NORMAL")
        await apply_migrations(db)
    except BaseException as exc:
        # Close on any failure: the connection's thread would otherwise keep the process alive
        # for ever after the error was reported.
        await db.close()
        if isinstance(exc, sqlite3.Error):
            raise unusable_database(path, exc) from None
        raise
    return db


def unusable_database(path: Path, exc: sqlite3.Error) -> StoreUnavailable:
    """One sentence for an SQLite error met while opening: damage, or a file we may not write."""
    said = str(exc).rstrip(".")
    if isinstance(exc, sqlite3.OperationalError) and "malformed" not in said:
        return StoreUnavailable(
            f"Cannot use the database {path} ({said}); check that it and its folder belong to this "
            "user and are writable, and that no other program holds it locked.")
    return StoreUnavailable(
        f"The database {path} is damaged ({said}); move it aside or restore it from a backup, "
        "then run threadedit again (an empty database is made in its place).")
