"""The job queue's claimed rows indexed by calendar: every claim asks, for each job it could
take, whether that calendar's refresh is already running (a claimed row with a live lease).

Without it that check reads the whole ``jobs`` table once per candidate. A queue table holds few
live rows and, between two autovacuum visits, thousands of dead ones, which a sequential scan
reads every time; the planner's estimate for the claim then also passes ``jit_above_cost``,
and each claim compiled itself before running.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision: str | None = "0013"
branch_labels: str | None = None
depends_on: str | None = None

_CLAIMED = "locked_by IS NOT NULL"


def upgrade() -> None:
    op.create_index(
        "ix_jobs_claimed",
        "jobs",
        ["tenant_id", "mailbox"],
        postgresql_where=sa.text(_CLAIMED),
        sqlite_where=sa.text(_CLAIMED),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_claimed", table_name="jobs")
