"""Worker presence: whether the worker named on a lease is still running.

A lease alone says a worker that dies mid-turn is replaced only when its lease runs out (30 s by
default). Presence says it at once, with a lock the operating system or the database drops the
moment the process ends, however it ends (SIGKILL, OOM, a crash):

- PostgreSQL: each worker holds a session advisory lock, keyed by its name, on a connection of
  its own. The server drops it when that connection closes (a killed process's socket is closed
  by its kernel). Any worker reads who is present from `pg_locks`. GoodJob and Oban mark running
  jobs the same way; as in que-go's `locked_until`, the lease stays the rule and presence only
  ends it early, since a lock can also vanish from a live worker (its connection cut): that
  worker then loses its turns the way a stalled one does, and the lease check at finish keeps
  their posts to one. A server restart drops every lock at once: for a short grace after it,
  nobody is judged gone while the live workers mark themselves present again.
- SQLite (one machine): each worker holds an exclusive `flock` on a file named for it in the data
  directory's `workers/` folder; a file nobody holds belongs to a worker that is gone.

A lease whose worker is gone may be taken at once (bot/leases.py). A worker is judged gone only
when its lock is missing: where presence cannot be seen (an in-memory store, behind PgBouncer in
transaction mode where the lock outlives the client), every worker looks present and leases run
their course, as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Collection
from pathlib import Path
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

log = logging.getLogger(__name__)

# The first key of the two-key advisory locks that mark workers present; uow.lock's one-key
# (bigint) locks never share a key with these in pg_locks.
PG_NAMESPACE = 0x7E0A
# After the server (re)starts, nobody is judged gone for this long: live workers mark themselves
# present again at their next look at the queue (every 2 s at most; bot/leases.py).
RESTART_GRACE_SECONDS = 15.0


def presence_key(owner: str) -> int:
    """A worker's name as a positive 32-bit key (a collision only makes a gone worker look
    present, so its lease runs its course)."""
    return int.from_bytes(hashlib.blake2b(owner.encode(), digest_size=4).digest(), "big") & 0x7FFFFFFF


class WorkerPresence(Protocol):
    async def hold(self, owner: str) -> None:
        """Mark `owner` present (again, if it was lost) until `drop` or the process ends."""

    async def lost(self, owner: str) -> None:
        """`owner` was seen gone though it runs (its connection was cut): hold it again next."""

    async def gone(self, conn: AsyncConnection | None, owners: Collection[str]) -> set[str]:
        """Those of `owners` whose workers are gone, read on the store's connection `conn`."""

    async def drop(self, owner: str) -> None: ...

    async def close(self) -> None: ...


class UnseenPresence:
    """Presence that cannot be seen: every worker looks present, and leases run their course."""

    async def hold(self, owner: str) -> None:
        return None

    async def lost(self, owner: str) -> None:
        return None

    async def gone(self, conn: AsyncConnection | None, owners: Collection[str]) -> set[str]:
        return set()

    async def drop(self, owner: str) -> None:
        return None

    async def close(self) -> None:
        return None


class FilePresence:
    """SQLite: an exclusive flock per worker on `folder/<key>.lock`. flock, not fcntl's record
    locks: those belong to the process, so one process could not see its own other workers."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._held: dict[str, int] = {}  # owner: the open file holding its lock

    def _path(self, owner: str) -> Path:
        return self.folder / f"{presence_key(owner):08x}.lock"

    async def hold(self, owner: str) -> None:
        import fcntl

        if owner in self._held:
            return
        self.folder.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(self._path(owner), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a name collision with a live worker: it stays unseen, leases decide
            os.close(fd)
            return
        self._held[owner] = fd

    async def lost(self, owner: str) -> None:
        return None  # a lock on an open file is never taken away from a live process

    async def gone(self, conn: AsyncConnection | None, owners: Collection[str]) -> set[str]:
        import fcntl

        gone: set[str] = set()
        for owner in owners:
            if owner in self._held:
                continue
            path = self._path(owner)
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:  # removed by the worker's own stop, or by a look like this
                gone.add(owner)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # held: the worker runs
            # Nobody held it: its worker is gone. Leases are taken only while their worker holds
            # its lock, so no live worker is between creating this file and locking it.
            gone.add(owner)
            with contextlib.suppress(OSError):
                path.unlink()
            os.close(fd)
        return gone

    async def drop(self, owner: str) -> None:
        fd = self._held.pop(owner, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                self._path(owner).unlink()
            os.close(fd)

    async def close(self) -> None:
        for owner in list(self._held):
            await self.drop(owner)


class AdvisoryPresence:
    """PostgreSQL: session advisory locks on one connection of this process, outside the pool
    (a pooled connection would carry the lock to other operations and back into the pool)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn = None  # psycopg.AsyncConnection holding the locks of `_held`
        self._held: set[str] = set()

    async def _connection(self):  # type: ignore[no-untyped-def]
        import psycopg

        from bot.storage.notices import libpq_url

        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                libpq_url(self.url), autocommit=True, connect_timeout=10)
            for owner in self._held:  # a connection made again holds every lock again
                await self._lock(owner)
        return self._conn

    async def _lock(self, owner: str) -> None:
        assert self._conn is not None
        await self._conn.execute("SELECT pg_advisory_lock(%s, %s)", (PG_NAMESPACE, presence_key(owner)))

    async def hold(self, owner: str) -> None:
        if owner in self._held and self._conn is not None and not self._conn.closed:
            return
        try:
            await self._connection()
            if owner not in self._held:
                await self._lock(owner)
                self._held.add(owner)
        except Exception:
            await self._discard()
            raise

    async def lost(self, owner: str) -> None:
        # Its lock is gone from pg_locks while this process runs: the connection was cut (a
        # server restart). Make it again at the next hold.
        log.warning("this worker's presence in the database was lost; marking it present again")
        await self._discard()

    async def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def gone(self, conn: AsyncConnection | None, owners: Collection[str]) -> set[str]:
        if not owners or conn is None:
            return set()
        found = (await conn.execute(text(
            "SELECT EXTRACT(EPOCH FROM now() - pg_postmaster_start_time()),"
            " ARRAY(SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted"
            "  AND classid = :namespace AND objsubid = 2"
            "  AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))"),
            {"namespace": PG_NAMESPACE})).one()
        uptime, present = float(found[0]), {int(key) for key in found[1]}
        missing = {owner for owner in owners if presence_key(owner) not in present}
        if uptime < RESTART_GRACE_SECONDS:
            # The server started a moment ago: every lock went with the old one, and live workers
            # are still marking themselves present again. Only this process's own loss is sure.
            return missing & self._held
        return missing
    async def drop(self, owner: str) -> None:
        if owner not in self._held:
            return
        self._held.discard(owner)
        if self._conn is not None and not self._conn.closed:
            with contextlib.suppress(Exception):
                await self._conn.execute("SELECT pg_advisory_unlock(%s, %s)",
                                         (PG_NAMESPACE, presence_key(owner)))

    async def close(self) -> None:
        self._held.clear()
        await self._discard()


def presence_for(dialect: str, url: str, sqlite_file: Path | None) -> WorkerPresence:
    if dialect == "postgresql":
        return AdvisoryPresence(url)
    if sqlite_file is not None and os.name == "posix":
        return FilePresence(sqlite_file.parent / "workers")
    return UnseenPresence()
