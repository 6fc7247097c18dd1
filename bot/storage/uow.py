"""The unit of work: one transaction on one connection, with every repository on it, and the
Store that runs operations in such transactions, on SQLite or PostgreSQL.

In the style of datasette's `execute_write_fn`: the caller hands `Store.transact` a function of
the unit of work; it runs inside ONE transaction, committed when it returns, rolled back when
it raises. An operation that met a lost connection (a PostgreSQL restart, a dropped link) is
run again from the start on a new connection, a bounded number of times: it rolled back, so
running it again from the start is safe. Operations must therefore do nothing outside the
database (no posting, no model call) and keep no state between attempts.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import random
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.domain import SessionState
from bot.storage import migrate
from bot.storage.engine import (
    MigrationError,
    StoreUnavailable,
    make_engine,
    sqlite_path,
    sqlite_url,
    store_error,
)
from bot.storage.presence import WorkerPresence, presence_for
from bot.storage.queue import TurnQueue
from bot.storage.records import AppState, InboundEvents, Posts, UploadedFileRows, Usage
from bot.storage.repositories import Approvals, AuditLog, Sessions, Turns

log = logging.getLogger(__name__)
T = TypeVar("T")

# A lost connection is retried this many times, waiting 0.1 s, 0.2 s, .. up to 2 s between tries
# (about 7 s in all), long enough for a PostgreSQL restart or a failover of a managed server.
RETRY_ATTEMPTS = 8
RETRY_FIRST_WAIT = 0.1
RETRY_MAX_WAIT = 2.0
# PostgreSQL's "try the transaction again" errors: serialization failure and deadlock.
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})

_inside: contextvars.ContextVar[Store | None] = contextvars.ContextVar("threadedit_uow", default=None)


class UnitOfWork:
    """One transaction's connection and the repositories on it."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.sessions = Sessions(conn)
        self.turns = Turns(conn)
        self.approvals = Approvals(conn)
        self.audit = AuditLog(conn)
        self.events = InboundEvents(conn)
        self.posts = Posts(conn)
        self.app_state = AppState(conn)
        self.usage = Usage(conn)
        self.uploads = UploadedFileRows(conn)
        self.queue = TurnQueue(conn)

    async def load_state(self, session_id: int, *, for_update: bool = False) -> SessionState:
        """The session, its turns and approvals, as this transaction sees them; `for_update`
        locks the session's row first (PostgreSQL), so operations on one session that read
        its head and then move it run one after another."""
        session = await self.sessions.get(session_id, for_update=for_update)
        return SessionState(session, await self.turns.of_session(session_id),
                            await self.approvals.of_session(session_id))

    async def lock(self, name: str) -> None:
        """Hold a named lock until this transaction ends, for a check that reads rows and then
        inserts one (a user's turns this hour, a workspace's spend today): two processes doing
        that at once would both pass. PostgreSQL: an advisory transaction lock on the name's
        hash. SQLite needs none: BEGIN IMMEDIATE already made the transaction the only writer."""
        if self.conn.dialect.name != "postgresql":
            return
        key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)
        await self.conn.execute(select(func.pg_advisory_xact_lock(key)))


Op = Callable[[UnitOfWork], Awaitable[T]]


def _retryable(exc: BaseException) -> bool:
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in _RETRY_SQLSTATES


class Store:
    """The database behind threadedit: `transact` for writes, `read` for reads."""

    def __init__(self, engine: AsyncEngine, url: str) -> None:
        self.engine = engine
        self.url = url
        self.is_sqlite = engine.dialect.name == "sqlite"
        # SQLite has one writer at a time per file: tasks of this process queue here instead of
        # each holding a connection while it waits for the file's lock.
        self._write_lock = asyncio.Lock()
        self.retries = 0  # connections lost and operations run again, for tests and logs
        # Which workers named on leases still run (bot/storage/presence.py).
        self.presence: WorkerPresence = presence_for(engine.dialect.name, url, sqlite_path(url))

    @classmethod
    async def open(cls: type[S], url: str | Path | URL) -> S:
        """Bring the schema at `url` up to date, then open it. A Path is an SQLite file."""
        url = sqlite_url(url) if isinstance(url, Path) else make_url(url).render_as_string(False)
        try:
            await migrate.upgrade(url)
        except MigrationError as exc:
            raise StoreUnavailable(str(exc)) from None
        # Every connection ends its transaction itself (Store._attempt), so the pool's own ROLLBACK
        # on return would only cost a round trip per operation.
        return cls(make_engine(url, pool_reset_on_return=None), url)

    async def close(self) -> None:
        await self.presence.close()
        await self.engine.dispose()

    async def transact(self, op: Op[T]) -> T:
        """Run `op` in one write transaction: all of its writes land, or none. SQLite: BEGIN
        IMMEDIATE takes the file's write lock first, so two processes numbering versions queue
        rather than both reading the same maximum."""
        self._refuse_nesting()
        if self.is_sqlite:
            async with self._write_lock:
                return await self._run(op, write=True)
        return await self._run(op, write=True)

    async def read(self, op: Op[T]) -> T:
        """Run `op` in one read transaction (one consistent view; no write lock)."""
        self._refuse_nesting()
        return await self._run(op, write=False)

    def _refuse_nesting(self) -> None:
        if _inside.get() is self:
            # Another transaction from inside an op would split the op in two (and on SQLite
            # wait for the lock its own caller holds): use the repositories on the op's uow.
            raise RuntimeError("a store operation was called inside a transaction; use the unit of "
                               "work's repositories (uow.turns, ...) instead")

    async def _run(self, op: Op[T], *, write: bool) -> T:
        for attempt in range(RETRY_ATTEMPTS + 1):
            try:
                return await self._attempt(op, write)
            except DBAPIError as exc:
                if _is_unusable(exc):
                    raise store_error(self.url, exc) from exc
                if not _retryable(exc):
                    raise
                if attempt == RETRY_ATTEMPTS:
                    if exc.connection_invalidated:  # still unreachable: where and why, in one sentence
                        raise store_error(self.url, exc) from exc
                    raise
                self.retries += 1
                wait = min(RETRY_MAX_WAIT, RETRY_FIRST_WAIT * 2 ** attempt) * random.uniform(0.8, 1.2)
                log.warning("the store's connection was lost (%s); trying the operation again in "
                            "%.1f s", type(exc.orig or exc).__name__, wait)
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def _attempt(self, op: Op[T], write: bool) -> T:
        try:
            conn = await self.engine.connect()
        except DBAPIError as exc:
            # A server not there (yet) is as retryable as a connection lost mid-way; an SQLite
            # file that cannot be opened stays so.
            exc.connection_invalidated = not self.is_sqlite
            raise
        try:
            if self.is_sqlite and write:
                await conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            token = _inside.set(self)
            try:
                async with conn.begin():
                    return await op(UnitOfWork(conn))
            finally:
                _inside.reset(token)
        finally:
            await conn.close()


def _is_unusable(exc: DBAPIError) -> bool:
    """An SQLite file found damaged (or no longer readable) after it opened."""
    orig = exc.orig
    return isinstance(orig, sqlite3.DatabaseError) and not isinstance(orig, sqlite3.IntegrityError) \
        and ("malformed" in str(orig) or "not a database" in str(orig) or "disk I/O" in str(orig))


S = TypeVar("S", bound=Store)
