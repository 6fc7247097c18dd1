"""`threadedit store copy`: every row of one store (an SQLite data directory) into a PostgreSQL store.

Both sides are brought to the newest schema first (an old data directory is adopted). The source
is read in one transaction, so the copy is one consistent snapshot even if something writes to
it meanwhile; the target is written in one transaction, checked inside it, and committed only if
the check passes, so a refusal or a failed check leaves the target exactly as it was.

Running it again is safe. A row already in the target with the same primary key is skipped when
equal. When it differs, the target row's `xmin` (the PostgreSQL transaction that last wrote it)
says who changed it: a transaction of an earlier copy (recorded in app_state under COPY_MARKER)
means only the source moved on since, so the row is updated; any other means the target has moved
on (a fleet already writes to it) and the copy is refused, naming the table and row, never
overwriting. A target row the source no longer has is deleted when an earlier copy wrote it (the
bot deletes inbound event claims and expired upload records), else refused the same way.

NUL characters (\\x00) are refused, not escaped: PostgreSQL text cannot hold them, and any
escape would hand the bot a different instruction or JSON document than it wrote, and break the
value-for-value check. The refusal names the table, row and column so it can be fixed at the
source. Images (blobs/) are files, not rows: they are not copied.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Table,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import NullPool

from bot.storage.db import unusable_database, utcnow
from bot.storage.engine import (
    StoreUnavailable,
    describe_connection_error,
    make_engine,
    sqlite_path,
    where,
)
from bot.storage.migrate import upgrade
from bot.storage.schema import app_state, metadata, sessions

BATCH_ROWS = 500  # rows read, looked up in the target and inserted at a time
# The app_state row where the target remembers which of its transactions were copies.
COPY_MARKER = "store_copy"
# Serialises two copies into one target (any fixed 64-bit number; this one spells "storecpy").
_PG_COPY_LOCK_KEY = 0x73746F7265637079
_INT4 = (-(2**31), 2**31 - 1)
# The tables a session is made of, replayed value for value by the check.
SESSION_TABLES = ("sessions", "turns", "approvals")


class CopyRefused(Exception):
    """The copy cannot or must not be made; one sentence, and the target is unchanged."""


@dataclass
class TableCopy:
    name: str
    copied: int = 0  # new in the target
    updated: int = 0  # changed in the source since an earlier copy
    skipped: int = 0  # already in the target, equal
    deleted: int = 0  # gone from the source since an earlier copy
    rows: int = 0  # in each store afterwards, checked equal


@dataclass
class CopyReport:
    source: str
    target: str
    tables: list[TableCopy] = field(default_factory=list)
    sessions_replayed: int = 0
    rows_compared: int = 0


def check_urls(source: str, target: str) -> None:
    """Refuse, in one sentence, what cannot be copied before anything is opened or changed."""
    try:
        t = make_url(target)
    except ArgumentError:
        raise CopyRefused("--to is not a database URL; give one such as "
                          "postgresql+psycopg://user:password@host:5432/database.") from None
    if t.get_backend_name() != "postgresql":
        raise CopyRefused(f"--to names {where(t)}; store copy writes to PostgreSQL only "
                          "(postgresql+psycopg://user:password@host:5432/database).")
    try:
        s = make_url(source)
    except ArgumentError:
        raise CopyRefused("--from is not a database URL; give one such as "
                          "sqlite+aiosqlite:////path/to/threadedit.sqlite3.") from None
    path = sqlite_path(s)
    if s.get_backend_name() == "sqlite" and (path is None or not path.is_file()
                                             or path.stat().st_size == 0):
        raise CopyRefused(f"There is no store to copy at {path or 'an in-memory database'}; set "
                          "THREADEDIT_DATA_DIR to the data directory or give --from URL.")
    if path is not None:
        _readable_sqlite(path)
    if _identity(s) == _identity(t):
        raise CopyRefused(f"--from and --to both name {where(t)}; copy into another database.")


def _readable_sqlite(path: Path) -> None:
    """A damaged source file gets the sentence every command gives for it, not a driver error."""
    try:
        with closing(sqlite3.connect(path)) as db:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise unusable_database(path, exc) from None


def _identity(u: URL) -> tuple[Any, ...]:
    path = sqlite_path(u)
    if path is not None:
        return ("sqlite", str(path.resolve()))
    return (u.get_backend_name(), (u.host or "").lower(), u.port or 5432, u.database)


async def copy_store(source: str, target: str, *, batch_rows: int = BATCH_ROWS) -> CopyReport:
    """Copy every row of `source` into the PostgreSQL store `target`, check it and commit."""
    check_urls(source, target)
    await upgrade(source)  # adopts an old data directory; StoreUnavailable/MigrationError
    await upgrade(target)
    report = CopyReport(where(source), where(target))
    src_engine = make_engine(source, poolclass=NullPool)
    dst_engine = make_engine(target, poolclass=NullPool)
    try:
        async with src_engine.connect() as src, src.begin(), dst_engine.connect() as dst:
            try:
                async with dst.begin():
                    await _copy_all(src, dst, report, batch_rows)
                    await _check(src, dst, report, batch_rows)
            except DBAPIError as exc:
                raise _refused(target, exc) from None
    except DBAPIError as exc:  # opening or reading: the driver's text is never shown
        url = target if "postgresql" in type(exc.orig or exc).__module__ else source
        raise StoreUnavailable(describe_connection_error(url, exc)) from None
    finally:
        await src_engine.dispose()
        await dst_engine.dispose()
    return report


def _refused(target: str, exc: DBAPIError) -> Exception:
    """PostgreSQL refused a statement (a constraint, a type) or the connection broke."""
    state = getattr(getattr(exc.orig, "diag", None), "sqlstate", None) or ""
    if not state or state.startswith("08") or state.startswith("57"):  # connection, shutdown
        return StoreUnavailable(describe_connection_error(target, exc))
    diag = exc.orig.diag  # type: ignore[union-attr]
    what = diag.constraint_name or diag.table_name or f"SQLSTATE {state}"
    return CopyRefused(f"{where(target)} refused the copy ({what}); nothing was copied.")


async def _copy_all(src: AsyncConnection, dst: AsyncConnection, report: CopyReport, batch_rows: int) -> None:
    await dst.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_COPY_LOCK_KEY})
    this_copy = str((await dst.execute(text("SELECT txid_current() % 4294967296"))).scalar_one())
    marker = (await dst.execute(select(app_state.c.value).where(app_state.c.name == COPY_MARKER))).scalar()
    recorded = json.loads(marker) if marker else {}
    # Only copies from this same source count as ours: another data directory's rows are not.
    earlier = set(recorded["transactions"]) if recorded.get("from") == report.source else set()
    ours = earlier | {this_copy}
    deferred: dict[str, list[dict[str, Any]]] = {}
    for table in metadata.sorted_tables:
        done = TableCopy(table.name)
        report.tables.append(done)
        deferred[table.name] = await _copy_table(src, dst, table, done, ours, batch_rows)
    for table in metadata.sorted_tables:  # foreign keys to tables copied later, now they exist
        rows = deferred[table.name]
        if rows:
            pk = table.primary_key.columns
            await dst.execute(update(table).where(*(c == bindparam("pk_" + c.key) for c in pk))
                              .values({c: bindparam(c) for c in rows[0] if not c.startswith("pk_")}), rows)
    for table in reversed(metadata.sorted_tables):
        await _delete_gone(src, dst, table, report, ours, batch_rows)
    await _advance_sequences(dst)
    await dst.execute(postgresql.insert(app_state).values(
        name=COPY_MARKER, updated_at=utcnow(),
        value=json.dumps({"from": report.source, "transactions": sorted(ours, key=int)}),
    ).on_conflict_do_update(index_elements=[app_state.c.name],
                            set_={"value": text("excluded.value"),
                                  "updated_at": text("excluded.updated_at")}))


def _deferred_columns(table: Table) -> list[Column[Any]]:
    """Columns whose foreign key points at a table copied later (sessions.head_turn_id): written
    as NULL first, then set once every table is in."""
    return [fk.parent for fk in table.foreign_keys if fk.use_alter]


async def _batches(src: AsyncConnection, table: Table,
                   batch_rows: int) -> AsyncIterator[list[tuple[Any, ...]]]:
    """The source's rows in primary key order, `batch_rows` at a time, checked for PostgreSQL."""
    query = select(table).order_by(*table.primary_key.columns)
    if table is app_state:
        query = query.where(app_state.c.name != COPY_MARKER)  # a source that was a target itself
    result = await src.stream(query)
    async for part in result.partitions(batch_rows):
        yield [_checked(table, tuple(row)) for row in part]


def _pk(table: Table, row: Sequence[Any]) -> tuple[Any, ...]:
    cols = list(table.columns)
    return tuple(row[cols.index(c)] for c in table.primary_key.columns)


async def _target_rows(dst: AsyncConnection, table: Table, keys: list[tuple[Any, ...]],
                       ) -> dict[tuple[Any, ...], tuple[tuple[Any, ...], str]]:
    """The target's rows with these primary keys: key -> (row, the xmin that wrote it)."""
    pk = list(table.primary_key.columns)
    where_ = (pk[0].in_([k[0] for k in keys]) if len(pk) == 1 else tuple_(*pk).in_(keys))
    rows = await dst.execute(select(*table.columns, literal_column("xmin::text")).where(where_))
    return {_pk(table, r): (tuple(r[:-1]), r[-1]) for r in rows}


async def _copy_table(src: AsyncConnection, dst: AsyncConnection, table: Table, done: TableCopy,
                      ours: set[str], batch_rows: int) -> list[dict[str, Any]]:
    names = [c.key for c in table.columns]
    later = [c.key for c in _deferred_columns(table)]
    pk_names = [c.key for c in table.primary_key.columns]
    deferred: list[dict[str, Any]] = []
    async for rows in _batches(src, table, batch_rows):
        there = await _target_rows(dst, table, [_pk(table, r) for r in rows])
        new: list[dict[str, Any]] = []
        for row in rows:
            key = _pk(table, row)
            values = dict(zip(names, row, strict=True))
            if key in there:
                old, xmin = there[key]
                if _same(old, row):
                    done.skipped += 1
                    continue
                if xmin not in ours:
                    raise CopyRefused(
                        f"The target's {table.name} row {_shown(key)} differs from the source's and was "
                        "written there by something other than a copy from this source, so the target has "
                        "moved on; nothing was copied.")
                await dst.execute(update(table).where(*(table.c[k] == values[k] for k in pk_names))
                                  .values({k: v for k, v in values.items() if k not in later}))
                done.updated += 1
            else:
                new.append({**values, **dict.fromkeys(later)})
                done.copied += 1
            if later and (key in there or any(values[k] is not None for k in later)):
                deferred.append({**{"pk_" + k: values[k] for k in pk_names}, **{k: values[k] for k in later}})
        if new:
            await dst.execute(insert(table), new)
    return deferred


async def _delete_gone(src: AsyncConnection, dst: AsyncConnection, table: Table, report: CopyReport,
                       ours: set[str], batch_rows: int) -> None:
    """Delete target rows an earlier copy wrote that the source has since deleted."""
    pk = list(table.primary_key.columns)
    query = select(*pk, literal_column("xmin::text")).order_by(*pk)
    if table is app_state:
        query = query.where(app_state.c.name != COPY_MARKER)
    target_keys = {tuple(r[:-1]): r[-1] for r in await dst.execute(query)}
    source_keys = {tuple(r) for r in await src.execute(select(*pk).where(
        *([app_state.c.name != COPY_MARKER] if table is app_state else [])))}
    gone = [k for k in target_keys if k not in source_keys]
    for key in gone:
        if target_keys[key] not in ours:
            raise CopyRefused(
                f"The target has {table.name} row {_shown(key)}, which the source does not have and "
                "no copy from it wrote, so the target has moved on; nothing was copied.")
    for i in range(0, len(gone), batch_rows):
        chunk = gone[i:i + batch_rows]
        await dst.execute(delete(table).where(
            pk[0].in_([k[0] for k in chunk]) if len(pk) == 1 else tuple_(*pk).in_(chunk)))
    next(t for t in report.tables if t.name == table.name).deleted = len(gone)


async def _advance_sequences(dst: AsyncConnection) -> None:
    """Set each id sequence past the highest id, so the next row PostgreSQL numbers is new;
    never back, should the target's sequence already be further on."""
    for table in metadata.sorted_tables:
        if not _is_serial(table):
            continue
        pk = list(table.primary_key.columns)
        seq = (await dst.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                                 {"t": table.name, "c": pk[0].name})).scalar()
        if seq is None:
            continue
        top = (await dst.execute(select(func.max(pk[0])))).scalar() or 0
        last = (await dst.execute(text("SELECT pg_sequence_last_value(CAST(:s AS regclass))"),
                                  {"s": seq})).scalar() or 0
        if max(top, last) > 0:
            await dst.execute(text("SELECT setval(CAST(:s AS regclass), :v)"),
                              {"s": seq, "v": max(top, last)})


def _is_serial(table: Table) -> bool:
    pk = list(table.primary_key.columns)
    return len(pk) == 1 and table.autoincrement_column is pk[0]


async def _check(src: AsyncConnection, dst: AsyncConnection, report: CopyReport, batch_rows: int) -> None:
    """Before the commit: as many rows on both sides, and every row equal value for value (so
    every session, its turns and approvals, replays the same from either store)."""
    for table in metadata.sorted_tables:
        done = next(t for t in report.tables if t.name == table.name)
        counts = []
        for conn in (src, dst):
            query = select(func.count()).select_from(table)
            if table is app_state:
                query = query.where(app_state.c.name != COPY_MARKER)
            counts.append((await conn.execute(query)).scalar_one())
        if counts[0] != counts[1]:
            raise CopyRefused(f"The check found {counts[0]} rows of {table.name} in the source but "
                              f"{counts[1]} in the target; nothing was copied.")
        done.rows = counts[0]
        async for rows in _batches(src, table, batch_rows):
            there = await _target_rows(dst, table, [_pk(table, r) for r in rows])
            for row in rows:
                key = _pk(table, row)
                if key not in there or not _same(there[key][0], row):
                    column = _first_difference(table, row, there[key][0]) if key in there else "id"
                    raise CopyRefused(f"The check found {table.name} row {_shown(key)} different in the "
                                      f"target ({column}); nothing was copied.")
            report.rows_compared += len(rows)
        if table is sessions:
            report.sessions_replayed = counts[0]


def _first_difference(table: Table, a: Sequence[Any], b: Sequence[Any]) -> str:
    return next((c.name for c, x, y in zip(table.columns, a, b, strict=True) if not _same((x,), (y,))),
                "no column")


def _same(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """Equal as Python values and types: 1 is not "1", and NaN equals NaN."""
    return len(a) == len(b) and all(
        type(x) is type(y) and (x == y or (x != x and y != y)) for x, y in zip(a, b, strict=True))


def _shown(key: tuple[Any, ...]) -> str:
    return ", ".join(repr(k) if isinstance(k, str) else str(k) for k in key)


def _checked(table: Table, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """The row as PostgreSQL will store it, or a refusal naming the value it cannot store.
    SQLite keeps any value in any column; PostgreSQL's columns take one type each."""
    out = []
    for column, value in zip(table.columns, row, strict=True):
        kind = _kind(column)
        if value is None:
            pass
        elif kind == "float" and type(value) is int:
            value = float(value)  # an integer in a REAL column: the same number
        elif type(value) is not _PYTHON_TYPE[kind]:
            raise CopyRefused(f"The source's {table.name} row {_shown(_pk(table, row))} holds "
                              f"{type(value).__name__} in {column.name}, where PostgreSQL needs {kind}; "
                              "nothing was copied.")
        elif kind == "text" and "\x00" in value:
            raise CopyRefused(f"The source's {table.name} row {_shown(_pk(table, row))} has a NUL character"
                              f" (\\x00) in {column.name}, which PostgreSQL text cannot hold; remove it "
                              "there and copy again (nothing was copied).")
        elif kind == "integer" and not _INT4[0] <= value <= _INT4[1]:
            raise CopyRefused(f"The source's {table.name} row {_shown(_pk(table, row))} has {value} in "
                              f"{column.name}, beyond PostgreSQL's integer; nothing was copied.")
        out.append(value)
    return tuple(out)


_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


_PYTHON_TYPE = {"integer": int, "bigint": int, "float": float, "text": str}


def _kind(column: Column[Any]) -> str:
    sql = column.type.compile(dialect=_PG)
    return {"INTEGER": "integer", "BIGINT": "bigint", "DOUBLE PRECISION": "float", "TEXT": "text"}[sql]


def blob_folder(source: str) -> Path | None:
    """The images' folder beside an SQLite source (the data directory's blobs/)."""
    path = sqlite_path(source)
    return path.parent / "blobs" if path else None
