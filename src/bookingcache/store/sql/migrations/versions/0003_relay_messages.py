"""The ``webhook-id``s of accepted relay calls, shared by every service process on the database,
so that a replay inside the 5-minute window is refused whichever process it reaches.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bookingcache.store.sql.schema import UTCDateTime

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "relay_messages",
        sa.Column("tenant_id", sa.String(200), nullable=False),
        sa.Column("message_id", sa.String(256), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "message_id", name="pk_relay_messages"),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_relay_messages_tenant_id_tenants",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_relay_messages_sent_at", "relay_messages", ["sent_at"])


def downgrade() -> None:
    op.drop_index("ix_relay_messages_sent_at", table_name="relay_messages")
    op.drop_table("relay_messages")
