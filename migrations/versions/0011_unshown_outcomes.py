"""Unshown outcomes: an index for the finished turns whose outcome no thread has shown yet.

Workers look for such turns every third of a lease (bot/leases.py `claim_unshown`): a worker that
died between finishing a turn and posting it leaves one, and another worker posts it. The
partial index keeps that look small however many turns the store holds: shown turns, the most
of them, are not in it.

Revision ID: 0011_unshown_outcomes
Revises: 0010_turn_leases
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0011_unshown_outcomes"
down_revision: str | None = "0010_turn_leases"
branch_labels: str | None = None
depends_on: str | None = None

WHERE = "delivered_at IS NULL AND state IN ('done', 'text', 'blocked', 'failed')"


def upgrade() -> None:
    op.create_index("turns_unshown", "turns", ["id"], sqlite_where=sa.text(WHERE),
                    postgresql_where=sa.text(WHERE))


def downgrade() -> None:
    op.drop_index("turns_unshown", table_name="turns")
