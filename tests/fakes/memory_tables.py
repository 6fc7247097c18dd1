"""Tables in memory, shaped and constrained by the store's one schema (bot/storage/schema.py).

The in-memory store (tests/fakes/memory_store.py) keeps each table as rows of plain dicts with
exactly the schema's columns, so the real row-to-domain functions (bot/storage/rows.py) turn
them into the same Session, Turn and Approval objects. What the schema declares is enforced
from its metadata, not restated here, so a constraint added to the schema applies to the fake
at once: primary keys and unique constraints (the session's thread, an inbound event's key, a
post's message, a version number per session, one usage row per turn), NOT NULL, the
`x IN (...)` checks and foreign keys. A violation raises sqlalchemy's IntegrityError, as the
real store does.

Rows are never changed in place: an update puts a new dict in the row's place. A copy of a
table therefore costs one dict of references, which is what lets the store give every
transaction its own copy of every table (copy-on-write) and drop it when the operation raises.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import CheckConstraint, Index, Table, UniqueConstraint
from sqlalchemy.exc import IntegrityError

from bot.storage.schema import metadata

RowDict = dict[str, Any]
Where = Callable[[RowDict], bool]
_IN_CHECK = re.compile(r"^\s*(\w+) IN \((.*)\)\s*$")


def _violation(message: str) -> IntegrityError:
    # The same exception type the real store raises (wrapping the driver's error).
    return IntegrityError("in-memory statement", None, Exception(message))


def _server_default(table: Table, name: str) -> Any:
    """A column's server default as a Python value ("'{}'" -> "{}", "0" on a float -> 0.0)."""
    default = table.c[name].server_default
    if default is None:
        return None
    value = ast.literal_eval(str(default.arg.text))  # type: ignore[attr-defined]
    try:
        python_type = table.c[name].type.python_type
    except NotImplementedError:
        return value
    return python_type(value)


def _partial(index: Index) -> list[str]:
    """The columns a partial unique index requires NULL; anything else it cannot follow."""
    where = index.dialect_options["sqlite"].get("where")
    if where is None:
        return []
    found = re.fullmatch(r"\s*(\w+) IS NULL\s*", str(where), re.IGNORECASE)
    if found is None:
        raise NotImplementedError(f"the in-memory store cannot enforce the unique index {index.name} "
                                  f"WHERE {where}: teach tests/fakes/memory_tables.py")
    return [found.group(1)]


class MemoryTable:
    """One table's rows, keyed by primary key, with the schema's constraints enforced."""

    def __init__(self, table: Table, *, writable: bool = True) -> None:
        self.table = table
        self.name = table.name
        self.writable = writable
        self.rows: dict[tuple[Any, ...], RowDict] = {}
        self.columns = [c.name for c in table.columns]
        self.pk = [c.name for c in table.primary_key.columns]
        # A single integer primary key is a rowid on SQLite: numbered max + 1 when not given.
        self.autoincrement = len(self.pk) == 1 and table.c[self.pk[0]].type.python_type is int
        # (columns, only rows where these columns are NULL): a unique constraint or index,
        # possibly partial ("... WHERE withdrawn_at IS NULL").
        self.uniques: list[tuple[list[str], list[str]]] = [(list(self.pk), [])]
        self.uniques += [([c.name for c in con.columns], []) for con in table.constraints
                         if isinstance(con, UniqueConstraint)]
        self.uniques += [([c.name for c in ix.columns], _partial(ix)) for ix in table.indexes if ix.unique]
        self.required = [c.name for c in table.columns if not c.nullable and c.server_default is None
                         and not (self.autoincrement and c.name == self.pk[0])]
        self.defaults = {c.name: _server_default(table, c.name) for c in table.columns
                         if c.server_default is not None}
        self.checks: list[tuple[str, set[Any]]] = []
        for con in table.constraints:
            if isinstance(con, CheckConstraint) and (m := _IN_CHECK.match(str(con.sqltext))):
                self.checks.append((m.group(1), set(ast.literal_eval(f"({m.group(2)},)"))))

    def copy(self, *, writable: bool) -> MemoryTable:
        clone = object.__new__(MemoryTable)
        clone.__dict__.update(self.__dict__)
        clone.rows = dict(self.rows)  # rows are replaced, never changed: references suffice
        clone.writable = writable
        return clone

    # Reading

    def select(self, where: Where | None = None, order_by: Callable[[RowDict], Any] | None = None,
               *, reverse: bool = False) -> list[RowDict]:
        """Matching rows as copies, in primary key order unless `order_by` says otherwise."""
        found = [dict(r) for _, r in sorted(self.rows.items()) if where is None or where(r)]
        if order_by is not None:
            found.sort(key=order_by, reverse=reverse)
        return found

    def first(self, where: Where) -> RowDict | None:
        found = self.select(where)
        return found[0] if found else None

    # Writing

    def insert(self, db: MemoryDatabase, **values: Any) -> RowDict:
        self._refuse_read_only()
        unknown = set(values) - set(self.columns)
        if unknown:
            raise KeyError(f"{self.name} has no column(s) {sorted(unknown)}")
        row = {name: values.get(name, self.defaults.get(name)) for name in self.columns}
        if self.autoincrement and row[self.pk[0]] is None:
            row[self.pk[0]] = max((k[0] for k in self.rows), default=0) + 1
        self._check(db, row, replacing=None)
        self.rows[self._key(row)] = row
        return dict(row)

    def insert_or_ignore(self, db: MemoryDatabase, conflict: Iterable[str], **values: Any) -> bool:
        """INSERT .. ON CONFLICT (conflict) DO NOTHING: True when a row was inserted."""
        columns = list(conflict)
        if self.first(lambda r: all(r[c] == values.get(c) for c in columns)) is not None:
            return False
        self.insert(db, **values)
        return True

    def upsert(self, db: MemoryDatabase, conflict: Iterable[str], **values: Any) -> None:
        """INSERT .. ON CONFLICT (conflict) DO UPDATE SET every other given column."""
        columns = list(conflict)
        if self.first(lambda r: all(r[c] == values.get(c) for c in columns)) is None:
            self.insert(db, **values)
        else:
            self.update(db, lambda r: all(r[c] == values[c] for c in columns),
                        **{k: v for k, v in values.items() if k not in columns})

    def update(self, db: MemoryDatabase, where: Where, **values: Any) -> int:
        """Change the matching rows; how many matched (as a rowcount)."""
        self._refuse_read_only()
        unknown = set(values) - set(self.columns)
        if unknown:
            raise KeyError(f"{self.name} has no column(s) {sorted(unknown)}")
        keys = [k for k, r in self.rows.items() if where(r)]
        for key in keys:
            row = {**self.rows[key], **values}
            self._check(db, row, replacing=key)
            del self.rows[key]
            self.rows[self._key(row)] = row
        return len(keys)

    def delete(self, where: Where) -> int:
        self._refuse_read_only()
        keys = [k for k, r in self.rows.items() if where(r)]
        for key in keys:
            del self.rows[key]
        return len(keys)

    # Constraints

    def _key(self, row: RowDict) -> tuple[Any, ...]:
        return tuple(row[c] for c in self.pk)

    def _refuse_read_only(self) -> None:
        if not self.writable:
            raise RuntimeError(f"a write to {self.name} inside store.read(); writes belong in "
                               "store.transact()")

    def _check(self, db: MemoryDatabase, row: RowDict, replacing: tuple[Any, ...] | None) -> None:
        for name in self.required:
            if row[name] is None:
                raise _violation(f"NOT NULL constraint failed: {self.name}.{name}")
        for name, allowed in self.checks:
            if row[name] is not None and row[name] not in allowed:
                raise _violation(f"CHECK constraint failed: {self.name}.{name} = {row[name]!r}")
        for columns, when_null in self.uniques:
            values = [row[c] for c in columns]
            if any(v is None for v in values):  # NULLs are distinct in a unique constraint
                continue
            if any(row[c] is not None for c in when_null):
                continue
            for key, other in self.rows.items():
                if key != replacing and [other[c] for c in columns] == values \
                        and all(other[c] is None for c in when_null):
                    raise _violation("UNIQUE constraint failed: "
                                     + ", ".join(f"{self.name}.{c}" for c in columns))
        for column in self.table.columns:
            for fk in column.foreign_keys:
                value = row[column.name]
                if value is None:
                    continue
                target = db.tables[fk.column.table.name]
                if target is self and value == row[fk.column.name]:
                    continue  # a row that refers to itself
                if target.first(lambda r, c=fk.column.name, v=value: r[c] == v) is None:
                    raise _violation(f"FOREIGN KEY constraint failed: {self.name}.{column.name} "
                                     f"= {value!r} is not in {target.name}")


class MemoryDatabase:
    """Every table of the schema, in memory."""

    def __init__(self, tables: dict[str, MemoryTable] | None = None) -> None:
        self.tables = tables if tables is not None else {
            name: MemoryTable(table) for name, table in metadata.tables.items()}

    def copy(self, *, writable: bool) -> MemoryDatabase:
        return MemoryDatabase({name: t.copy(writable=writable) for name, t in self.tables.items()})

    def __getitem__(self, name: str) -> MemoryTable:
        return self.tables[name]
