"""Drop ``intake_journal_marks``: accepted notifications are made durable by the inbox's group
commit alone, on both engines, so no intake journal records how far it was stored.

A journal that a stopped process left on disk is not read any more; no release wrote one.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bookingcache.store.sql.schema import UTCDateTime

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.drop_table("intake_journal_marks")


def downgrade() -> None:
    op.create_table(
        "intake_journal_marks",
        sa.Column("slot", sa.String(64), nullable=False),
        sa.Column("segment", sa.BigInteger(), nullable=False),
        sa.Column("byte_offset", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("slot", name="pk_intake_journal_marks"),
    )
