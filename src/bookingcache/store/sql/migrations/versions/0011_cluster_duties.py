"""Cluster duties: duty leases with fencing tokens, process heartbeats, and the state the
periodic duties share (silence judgements, converge timing).

- ``duty_leases``: one row per periodic duty, its holder, lease expiry and fencing token;
- ``process_heartbeats``: each process incarnation and its last heartbeat;
- ``calendar_silence``: the silence duty's counters per calendar;
- ``tenant_converges``: each tenant's last converge and its pending debounced one.

Downgrading drops the four tables: the duties start again from nothing (every process judges
silence afresh and converges every tenant once).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bookingcache.store.sql.schema import UTCDateTime

revision = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "duty_leases",
        sa.Column("duty", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(200), nullable=True),
        sa.Column("token", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("acquired_at", UTCDateTime(), nullable=True),
        sa.Column("cursor", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("duty", name="pk_duty_leases"),
    )
    op.create_table(
        "process_heartbeats",
        sa.Column("incarnation", sa.String(200), nullable=False),
        sa.Column("instance_id", sa.String(200), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("incarnation", name="pk_process_heartbeats"),
    )
    op.create_index(
        "ix_process_heartbeats_instance_id", "process_heartbeats", ["instance_id"], unique=False
    )
    for table in ("calendar_silence", "tenant_converges"):
        columns: list[sa.Column[object]]
        if table == "calendar_silence":
            columns = [
                sa.Column("mailbox", sa.String(320), nullable=False),
                sa.Column("baseline", UTCDateTime(), nullable=False),
                sa.Column("unannounced", sa.Integer(), server_default=sa.text("0"), nullable=False),
                sa.Column("silent_since", UTCDateTime(), nullable=True),
            ]
            key = ["tenant_id", "mailbox"]
        else:
            columns = [
                sa.Column("last_at", UTCDateTime(), nullable=True),
                sa.Column("due_at", UTCDateTime(), nullable=True),
            ]
            key = ["tenant_id"]
        op.create_table(
            table,
            sa.Column("tenant_id", sa.String(200), nullable=False),
            *columns,
            sa.PrimaryKeyConstraint(*key, name=f"pk_{table}"),
            sa.ForeignKeyConstraint(
                ["tenant_id"],
                ["tenants.id"],
                name=f"fk_{table}_tenant_id_tenants",
                ondelete="CASCADE",
            ),
        )


def downgrade() -> None:
    op.drop_table("tenant_converges")
    op.drop_table("calendar_silence")
    op.drop_index("ix_process_heartbeats_instance_id", table_name="process_heartbeats")
    op.drop_table("process_heartbeats")
    op.drop_table("duty_leases")
