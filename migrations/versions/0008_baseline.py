"""Baseline: the schema migrations/0001_initial.sql .. 0007_uploaded_files.sql made on SQLite.

A new store (SQLite or PostgreSQL) is created here. An SQLite store made by those .sql files is
stamped at this revision without running it (bot/storage/migrate.py), so its tables keep their
unnamed constraints: a later batch operation on turns, audit_log, posts or usage there must pass
the CHECK constraints again (table_args), as batch mode drops unnamed CHECKs when it copies.

Frozen: later schema changes are new revisions, never edits here; the types are spelled out
rather than imported from bot/storage/schema.py for that reason.

Revision ID: 0008_baseline
Revises:
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008_baseline"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# INTEGER on SQLite keeps the primary key the rowid; BIGINT (BIGSERIAL) on PostgreSQL.
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
USD = sa.Double().with_variant(sa.REAL(), "sqlite")


def _id() -> sa.Column:
    return sa.Column("id", ROW_ID, nullable=False)


def _ref(name: str, nullable: bool) -> sa.Column:
    return sa.Column(name, ROW_ID, nullable=nullable)


def _text(name: str, nullable: bool = False, **kw: object) -> sa.Column:
    return sa.Column(name, sa.Text(), nullable=nullable, **kw)


def upgrade() -> None:
    op.create_table(
        "app_state",
        _text("name"), _text("value"), _text("updated_at"),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_app_state")),
    )
    op.create_table(
        "inbound_events",
        _text("platform"), _text("event_key"), _text("received_at"),
        sa.PrimaryKeyConstraint("platform", "event_key", name=op.f("pk_inbound_events")),
    )
    op.create_table(
        "sessions",
        _id(), _text("platform"), _text("workspace"), _text("channel"), _text("thread"),
        _text("model"), _text("aspect_ratio", True), _text("image_size", True),
        _ref("head_turn_id", True),  # its foreign key is added once turns exists, below
        _text("started_by"), _text("created_at"), _text("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
        sa.UniqueConstraint("platform", "workspace", "channel", "thread",
                            name=op.f("uq_sessions_platform_workspace_channel_thread")),
    )
    op.create_table(
        "turns",
        _id(), _ref("session_id", False), _ref("parent_turn_id", True),
        _text("kind"), _text("instruction"), _text("author"), _text("user_content"), _text("state"),
        _text("model"), _text("aspect_ratio", True), _text("image_size", True),
        _text("model_content", True), sa.Column("version", sa.Integer(), nullable=True),
        _text("image_blob", True), _text("image_mime", True), _text("text_reply", True),
        _text("reason", True), _text("message", True), _text("usage", True),
        _text("created_at"), _text("started_at", True), _text("finished_at", True),
        _text("delivered_at", True), _text("anchor_content", True),
        sa.CheckConstraint("kind IN ('edit', 'retry', 'upscale')", name=op.f("ck_turns_kind")),
        sa.CheckConstraint("state IN ('queued', 'running', 'done', 'text', 'blocked', 'failed')",
                           name=op.f("ck_turns_state")),
        sa.ForeignKeyConstraint(["parent_turn_id"], ["turns.id"],
                                name=op.f("fk_turns_parent_turn_id_turns")),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE",
                                name=op.f("fk_turns_session_id_sessions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_turns")),
        sa.UniqueConstraint("session_id", "version", name=op.f("uq_turns_session_id_version")),
    )
    # The circular reference: ALTER TABLE on PostgreSQL; on SQLite batch mode copies the (still
    # empty) sessions table into one with the key.
    with op.batch_alter_table("sessions") as batch:
        batch.create_foreign_key(op.f("fk_sessions_head_turn_id_turns"), "turns",
                                 ["head_turn_id"], ["id"])
    op.create_index("turns_by_session", "turns", ["session_id", "id"])
    op.create_index("turns_by_state", "turns", ["state"],
                    sqlite_where=sa.text("state IN ('queued', 'running')"),
                    postgresql_where=sa.text("state IN ('queued', 'running')"))
    op.create_index("turns_by_author_time", "turns", ["author", "created_at"])

    op.create_table(
        "approvals",
        _id(), _ref("session_id", False), _ref("turn_id", False),
        _text("approved_by"), _text("approved_at"), _text("withdrawn_by", True),
        _text("withdrawn_at", True),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE",
                                name=op.f("fk_approvals_session_id_sessions")),
        sa.ForeignKeyConstraint(["turn_id"], ["turns.id"], ondelete="CASCADE",
                                name=op.f("fk_approvals_turn_id_turns")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
    )
    op.create_index("approvals_by_turn", "approvals", ["turn_id"])

    op.create_table(
        "audit_log",
        _id(), _ref("session_id", True), _text("actor"), _text("action"), _text("outcome"),
        _text("detail", server_default=sa.text("'{}'")), _text("at"),
        sa.CheckConstraint("outcome IN ('ok', 'refused')", name=op.f("ck_audit_log_outcome")),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="SET NULL",
                                name=op.f("fk_audit_log_session_id_sessions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("audit_by_session", "audit_log", ["session_id", "id"])

    op.create_table(
        "posts",
        _id(), _text("platform"), _text("channel"), _text("message_id"),
        _ref("session_id", False), _ref("turn_id", True), _text("kind"), _text("created_at"),
        sa.CheckConstraint("kind IN ('progress', 'version', 'text')", name=op.f("ck_posts_kind")),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE",
                                name=op.f("fk_posts_session_id_sessions")),
        sa.ForeignKeyConstraint(["turn_id"], ["turns.id"], ondelete="CASCADE",
                                name=op.f("fk_posts_turn_id_turns")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_posts")),
        sa.UniqueConstraint("platform", "channel", "message_id",
                            name=op.f("uq_posts_platform_channel_message_id")),
    )
    op.create_index("posts_by_turn", "posts", ["turn_id", "kind"])

    op.create_table(
        "usage",
        _id(), _ref("turn_id", False), _ref("session_id", False),
        _text("platform"), _text("workspace"), _text("user"), _text("model"),
        _text("image_size", True),
        sa.Column("reserved_usd", USD, nullable=False),
        sa.Column("cost_usd", USD, server_default=sa.text("0"), nullable=False),
        _text("state"), _text("day"), _text("created_at"), _text("settled_at", True),
        sa.CheckConstraint("state IN ('reserved', 'charged', 'refunded')",
                           name=op.f("ck_usage_state")),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE",
                                name=op.f("fk_usage_session_id_sessions")),
        sa.ForeignKeyConstraint(["turn_id"], ["turns.id"], ondelete="CASCADE",
                                name=op.f("fk_usage_turn_id_turns")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage")),
        sa.UniqueConstraint("turn_id", name=op.f("uq_usage_turn_id")),
    )
    op.create_index("usage_by_workspace_day", "usage", ["platform", "workspace", "day"])

    op.create_table(
        "uploaded_files",
        _text("blob_key"), _text("name"), _text("uri"), _text("mime"), _text("expires_at"),
        _text("uploaded_at"),
        sa.PrimaryKeyConstraint("blob_key", name=op.f("pk_uploaded_files")),
    )
    op.create_index("uploaded_files_by_uri", "uploaded_files", ["uri"])


def downgrade() -> None:
    # Dropping the baseline drops everything; there is nothing older to go back to.
    with op.batch_alter_table("sessions") as batch:
        batch.drop_constraint(op.f("fk_sessions_head_turn_id_turns"), type_="foreignkey")
    for table in ("uploaded_files", "usage", "posts", "audit_log", "approvals", "turns", "sessions",
                  "inbound_events", "app_state"):
        op.drop_table(table)
