"""One active approval per version and person: a unique index on approvals (turn_id,
approved_by) over the rows not withdrawn.

Two approvals by one person at the same moment both passed the service's "already approved?"
read and both inserted (issue 13). Duplicates such a race left are folded into the first one
before the index is made: the later rows say nothing the first does not.

Revision ID: 0009_one_active_approval
Revises: 0008_baseline
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009_one_active_approval"
down_revision: str | None = "0008_baseline"
branch_labels: str | None = None
depends_on: str | None = None

ACTIVE = "withdrawn_at IS NULL"


def upgrade() -> None:
    # The same statement on SQLite and PostgreSQL: drop an active approval when an earlier active
    # one by the same person on the same version exists.
    op.execute(sa.text(
        "DELETE FROM approvals WHERE withdrawn_at IS NULL AND EXISTS (SELECT 1 FROM approvals AS earlier"
        " WHERE earlier.turn_id = approvals.turn_id AND earlier.approved_by = approvals.approved_by"
        " AND earlier.withdrawn_at IS NULL AND earlier.id < approvals.id)"))
    op.create_index("approvals_one_active", "approvals", ["turn_id", "approved_by"], unique=True,
                    sqlite_where=sa.text(ACTIVE), postgresql_where=sa.text(ACTIVE))


def downgrade() -> None:
    op.drop_index("approvals_one_active", table_name="approvals")
