"""Rooms gain an optional ``capacity``: how many people a room seats, given when it is linked or
imported, so that a map client can look for a free room big enough for a meeting.

Existing rooms have no capacity (NULL) until they are linked or imported again with one.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("rooms", sa.Column("capacity", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rooms") as batch:
        batch.drop_column("capacity")
