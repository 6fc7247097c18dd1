"""The store's schema, defined once (SQLAlchemy 2 Core) for SQLite and PostgreSQL.

It equals what migrations/0001_initial.sql .. 0007_uploaded_files.sql make on SQLite (the
test in tests/test_schema.py holds the two together), so a data directory from that release is
stamped at the Alembic baseline as it is. Choices that keep values round-tripping unchanged:

- Timestamps stay ISO 8601 text (`bot.storage.db.utcnow()`: "2026-11-21T06:05:19.123+00:00"),
  as SQLite stores them today; they sort as text because every writer uses the one format.
- JSON documents (user_content, model_content, usage, anchor_content, detail) stay text, byte
  for byte as written, not JSON/JSONB (JSONB would reorder keys and drop duplicate ones).
- Row ids are BIGINT on PostgreSQL but must be exactly INTEGER on SQLite, where only an
  "INTEGER PRIMARY KEY" column is the rowid (64-bit either way).
- Money is REAL on SQLite as today and DOUBLE PRECISION on PostgreSQL (both IEEE 8-byte).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    REAL,
    BigInteger,
    CheckConstraint,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)

# Every constraint gets a predictable name: Alembic's batch mode on SQLite (copy the table, drop
# the old one) can drop or alter only constraints it can name, and PostgreSQL needs names to
# ALTER them. Index names are given explicitly below and kept from the .sql migrations.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# A row id: BIGINT (BIGSERIAL when a primary key) on PostgreSQL, INTEGER on SQLite so that the
# primary key stays the rowid, as in the .sql migrations.
RowId = BigInteger().with_variant(Integer(), "sqlite")
Usd = Double().with_variant(REAL(), "sqlite")


def _in(column: str, *values: str) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


sessions = Table(
    "sessions", metadata,
    Column("id", RowId, nullable=False),
    Column("platform", Text, nullable=False),
    Column("workspace", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("thread", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("aspect_ratio", Text),
    Column("image_size", Text),
    # Sessions and turns refer to each other: PostgreSQL can add this key only once turns exists.
    Column("head_turn_id", RowId, ForeignKey("turns.id", use_alter=True)),
    Column("started_by", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("platform", "workspace", "channel", "thread"),
)

turns = Table(
    "turns", metadata,
    Column("id", RowId, nullable=False),
    Column("session_id", RowId, ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("parent_turn_id", RowId, ForeignKey("turns.id")),
    Column("kind", Text, nullable=False),
    Column("instruction", Text, nullable=False),
    Column("author", Text, nullable=False),
    # The user content as sent to the model (JSON), image data replaced by blob references.
    Column("user_content", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("aspect_ratio", Text),
    Column("image_size", Text),
    # candidates[0].content exactly as received (JSON), image data replaced by blob references.
    Column("model_content", Text),
    Column("version", Integer),
    Column("image_blob", Text),
    Column("image_mime", Text),
    Column("text_reply", Text),
    Column("reason", Text),
    Column("message", Text),
    Column("usage", Text),
    Column("created_at", Text, nullable=False),
    Column("started_at", Text),
    Column("finished_at", Text),
    # 0004: when a chat adapter showed the outcome in its thread; NULL: not shown yet.
    Column("delivered_at", Text),
    # 0006: the self-contained user turn a re-anchored request sent (JSON); NULL: ordinary.
    Column("anchor_content", Text),
    # 0010: the worker running (or about to run) the turn and until when its lease holds (ISO
    # 8601 UTC, as every timestamp); NULL: nobody holds it. See bot/storage/queue.py.
    Column("lease_owner", Text),
    Column("lease_expires_at", Text),
    PrimaryKeyConstraint("id"),
    CheckConstraint(_in("kind", "edit", "retry", "upscale"), name="kind"),
    CheckConstraint(_in("state", "queued", "running", "done", "text", "blocked", "failed"),
                    name="state"),
    UniqueConstraint("session_id", "version"),
)
Index("turns_by_session", turns.c.session_id, turns.c.id)
Index("turns_by_state", turns.c.state,
      sqlite_where=text(_in("state", "queued", "running")),
      postgresql_where=text(_in("state", "queued", "running")))
Index("turns_by_author_time", turns.c.author, turns.c.created_at)
# 0011: finished turns no thread has shown yet (bot/storage/queue.py `unshown`).
Index("turns_unshown", turns.c.id,
      sqlite_where=text("delivered_at IS NULL AND " + _in("state", "done", "text", "blocked", "failed")),
      postgresql_where=text("delivered_at IS NULL AND " + _in("state", "done", "text", "blocked", "failed")))

approvals = Table(
    "approvals", metadata,
    Column("id", RowId, nullable=False),
    Column("session_id", RowId, ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("turn_id", RowId, ForeignKey("turns.id", ondelete="CASCADE"), nullable=False),
    Column("approved_by", Text, nullable=False),
    Column("approved_at", Text, nullable=False),
    Column("withdrawn_by", Text),
    Column("withdrawn_at", Text),
    PrimaryKeyConstraint("id"),
)
Index("approvals_by_turn", approvals.c.turn_id)
# 0009: one active (not withdrawn) approval per version and person, so two approvals sent at
# once record one (Approvals.add inserts ON CONFLICT DO NOTHING against this index).
Index("approvals_one_active", approvals.c.turn_id, approvals.c.approved_by, unique=True,
      sqlite_where=text("withdrawn_at IS NULL"), postgresql_where=text("withdrawn_at IS NULL"))

audit_log = Table(
    "audit_log", metadata,
    Column("id", RowId, nullable=False),
    Column("session_id", RowId, ForeignKey("sessions.id", ondelete="SET NULL")),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("detail", Text, nullable=False, server_default=text("'{}'")),  # JSON object
    Column("at", Text, nullable=False),
    PrimaryKeyConstraint("id"),
    CheckConstraint(_in("outcome", "ok", "refused"), name="outcome"),
)
Index("audit_by_session", audit_log.c.session_id, audit_log.c.id)

# 0002: every message the bot posts, so a reaction on any of them maps back to its turn.
posts = Table(
    "posts", metadata,
    Column("id", RowId, nullable=False),
    Column("platform", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("message_id", Text, nullable=False),
    Column("session_id", RowId, ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("turn_id", RowId, ForeignKey("turns.id", ondelete="CASCADE")),
    Column("kind", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    PrimaryKeyConstraint("id"),
    CheckConstraint(_in("kind", "progress", "version", "text"), name="kind"),
    UniqueConstraint("platform", "channel", "message_id"),
)
Index("posts_by_turn", posts.c.turn_id, posts.c.kind)

# 0002: inbound event keys, so a platform's retry of one event does nothing twice.
inbound_events = Table(
    "inbound_events", metadata,
    Column("platform", Text, nullable=False),
    Column("event_key", Text, nullable=False),
    Column("received_at", Text, nullable=False),
    PrimaryKeyConstraint("platform", "event_key"),
)

# 0003: small facts an adapter remembers across restarts.
app_state = Table(
    "app_state", metadata,
    Column("name", Text, nullable=False),
    Column("value", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    PrimaryKeyConstraint("name"),
)

# 0005: spend per model call, reserved before the call and settled after it; one row per turn.
usage = Table(
    "usage", metadata,
    Column("id", RowId, nullable=False),
    Column("turn_id", RowId, ForeignKey("turns.id", ondelete="CASCADE"), nullable=False),
    Column("session_id", RowId, ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("platform", Text, nullable=False),
    Column("workspace", Text, nullable=False),
    Column("user", Text, nullable=False),  # a reserved word on PostgreSQL: always quoted
    Column("model", Text, nullable=False),
    Column("image_size", Text),
    Column("reserved_usd", Usd, nullable=False),
    Column("cost_usd", Usd, nullable=False, server_default=text("0")),
    Column("state", Text, nullable=False),
    Column("day", Text, nullable=False),  # the UTC date of the reservation: the budget's day
    Column("created_at", Text, nullable=False),
    Column("settled_at", Text),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("turn_id"),
    CheckConstraint(_in("state", "reserved", "charged", "refunded"), name="state"),
)
Index("usage_by_workspace_day", usage.c.platform, usage.c.workspace, usage.c.day)

# 0007: reference images on Gemini's Files API, by blob; a cache only.
uploaded_files = Table(
    "uploaded_files", metadata,
    Column("blob_key", Text, nullable=False),  # the image in the blob store (sha256.ext)
    Column("name", Text, nullable=False),  # files/<id>
    Column("uri", Text, nullable=False),  # what a fileData part names
    Column("mime", Text, nullable=False),
    Column("expires_at", Text, nullable=False),  # ISO 8601 UTC, from the file's expirationTime
    Column("uploaded_at", Text, nullable=False),
    PrimaryKeyConstraint("blob_key"),
)
Index("uploaded_files_by_uri", uploaded_files.c.uri)

# Tables the store has but the metadata does not describe: the .sql migrations' own record,
# which bot/storage/legacy_sqlite.py reads to adopt an old store, and Alembic's version table.
UNMANAGED_TABLES = frozenset({"schema_migrations", "alembic_version"})


def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    """Alembic's filter for comparing and autogenerating: leave the unmanaged tables alone."""
    return not (type_ == "table" and name in UNMANAGED_TABLES)
