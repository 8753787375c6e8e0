"""How far each intake journal has been moved into the inbox (docs/intake.md, "The journal").

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bookingcache.store.sql.schema import UTCDateTime

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "intake_journal_marks",
        sa.Column("slot", sa.String(64), nullable=False),
        sa.Column("segment", sa.BigInteger(), nullable=False),
        sa.Column("byte_offset", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("slot", name="pk_intake_journal_marks"),
    )


def downgrade() -> None:
    op.drop_table("intake_journal_marks")
