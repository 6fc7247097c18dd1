"""What every way of opening the store shares: its one error, private files and folders, the
timestamp format, and the sentences for an SQLite file that cannot be used.

(The store itself is opened by bot/storage/uow.py; its schema is brought up to date by
bot/storage/migrate.py.)"""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

# Defined below every layer (the chat core recognises it); importers of bot.storage.db keep it.
from bot.errors import StoreUnavailable as StoreUnavailable


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
    return utc_after(0.0)


def utc_after(seconds: float) -> str:
    """The store's one timestamp format (ISO 8601 UTC, milliseconds), `seconds` from now: every
    writer uses it, so timestamps (lease expiries among them) compare as text."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


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


def unusable_database(path: Path, exc: sqlite3.Error) -> StoreUnavailable:
    """One sentence for an SQLite error met while opening or using the file: damage, or a
    file we may not write."""
    said = str(exc).rstrip(".")
    if isinstance(exc, sqlite3.OperationalError) and "malformed" not in said:
        return StoreUnavailable(
            f"Cannot use the database {path} ({said}); check that it and its folder belong to this "
            "user and are writable, and that no other program holds it locked.")
    return StoreUnavailable(
        f"The database {path} is damaged ({said}); move it aside or restore it from a backup, "
        "then run threadedit again (an empty database is made in its place).")
