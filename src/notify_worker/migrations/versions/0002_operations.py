"""Indexes for retention and manual retries.

Pruning deletes finished jobs oldest first: a partial index on finished_at
lets each batch find them without scanning the live rows. retry_of is a
foreign key with ON DELETE SET NULL, so each deleted job makes PostgreSQL
look for the jobs that retried it; without an index that is a scan of the
whole table per deleted row.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "notify_jobs_finished_at_idx",
        "notify_jobs",
        ["finished_at"],
        postgresql_where=sa.text("status IN ('success', 'failed', 'cancelled')"),
    )
    op.create_index(
        "notify_jobs_retry_of_idx",
        "notify_jobs",
        ["retry_of"],
        postgresql_where=sa.text("retry_of IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("notify_jobs_retry_of_idx", table_name="notify_jobs")
    op.drop_index("notify_jobs_finished_at_idx", table_name="notify_jobs")
