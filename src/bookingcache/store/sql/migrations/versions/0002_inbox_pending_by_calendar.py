"""The inbox's pending rows indexed by calendar: a refresh's claim (the calendar's newest
pending row) and its completion (mark the calendar's rows up to it processed) touch that
calendar's pending rows only, however many other notifications are waiting.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_PENDING = "processed_at IS NULL"


def upgrade() -> None:
    op.create_index(
        "ix_inbox_pending_calendar",
        "inbox",
        ["tenant_id", "mailbox", "id"],
        postgresql_where=sa.text(_PENDING),
        sqlite_where=sa.text(_PENDING),
    )
    op.drop_index("ix_inbox_pending", table_name="inbox")


def downgrade() -> None:
    op.create_index(
        "ix_inbox_pending",
        "inbox",
        ["id"],
        postgresql_where=sa.text(_PENDING),
        sqlite_where=sa.text(_PENDING),
    )
    op.drop_index("ix_inbox_pending_calendar", table_name="inbox")
