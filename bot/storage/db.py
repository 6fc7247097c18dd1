"""Opening the SQLite database: WAL, foreign keys, numbered migrations applied in order."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def create_private_file(path: Path) -> None:
    """Create the database file readable by its owner only before SQLite opens it; SQLite gives
    its -wal and -shm files the database file's permissions."""
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for made in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if made.exists():  # files an older version made with the umask's permissions
            os.chmod(made, 0o600)


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def make_private_dir(path: Path) -> None:
    """Create the data directory readable by its owner only (it holds every image and prompt)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
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
    db = await aiosqlite.connect(path, isolation_level=None)  # we manage transactions
    db.row_factory = aiosqlite.Row
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA foreign_keys=ON")
    await db.execute("PRAGMA synchronous=NORMAL")
    # Several processes (CLI calls, the bot) may share the file: wait for a lock, do not fail.
    await db.execute("PRAGMA busy_timeout=10000")
    await apply_migrations(db)
    return db
