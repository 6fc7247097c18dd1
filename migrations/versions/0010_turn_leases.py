"""Turn leases: the turn queue lives in the store (issue 14).

A worker claims a queued turn by writing its name and a lease expiry on the turn's row, renews
the lease while it works, and finishes the turn in one transaction. A turn whose lease expired
(its worker died) is claimed again by any live worker. Both columns are NULL on every existing
row: an unleased turn is free to claim.

Revision ID: 0010_turn_leases
Revises: 0009_one_active_approval
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010_turn_leases"
down_revision: str | None = "0009_one_active_approval"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Plain ADD COLUMN on both databases (SQLite takes a nullable column without a table copy).
    op.add_column("turns", sa.Column("lease_owner", sa.Text(), nullable=True))
    op.add_column("turns", sa.Column("lease_expires_at", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
