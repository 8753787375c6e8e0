"""Initial schema: tenants, rooms, calendars, cached events, the change feed, the notification
inbox, refresh jobs, subscriptions and clientState secrets.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from bookingcache.store.sql.schema import UTCDateTime

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _serial() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _tenant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id"], ["tenants.id"], name=f"fk_{table}_tenant_id_tenants", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("event_source", sa.String(16), nullable=False),
        sa.Column("connector_url", sa.Text(), nullable=True),
        sa.Column("title_policy", sa.String(16), nullable=False),
        sa.Column("default_time_zone", sa.String(64), nullable=False),
        sa.Column("staleness_bound_s", sa.Integer(), nullable=False),
        sa.Column("signing_secret", sa.Text(), nullable=False),
        sa.Column("read_token_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tenants"),
    )
    op.create_table(
        "rooms",
        sa.Column("tenant_id", sa.String(200), nullable=False),
        sa.Column("room_id", sa.String(200), nullable=False),
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("building", sa.String(200), nullable=True),
        sa.Column("floor", sa.String(64), nullable=True),
        sa.Column("geometry", _json(), nullable=True),
        sa.Column("time_zone", sa.String(64), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "room_id", name="pk_rooms"),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_rooms_tenant_id_tenants",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_rooms_tenant_id_building_floor", "rooms", ["tenant_id", "building", "floor"]
    )
    op.create_index("ix_rooms_tenant_id_mailbox", "rooms", ["tenant_id", "mailbox"])

    op.create_table(
        "calendars",
        sa.Column("tenant_id", sa.String(200), nullable=False),
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=True),
        sa.Column("last_refresh_at", UTCDateTime(), nullable=True),
        sa.Column("last_success_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("window_start", UTCDateTime(), nullable=True),
        sa.Column("window_end", UTCDateTime(), nullable=True),
        sa.Column("delta_link", sa.Text(), nullable=True),
        sa.Column(
            "consecutive_failures", sa.Integer(), nullable=False, server_default=sa.text("0")
        ),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "mailbox", name="pk_calendars"),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_calendars_tenant_id_tenants",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_calendars_last_success_at", "calendars", ["last_success_at"])

    op.create_table(
        "events",
        sa.Column("tenant_id", sa.String(200), nullable=False),
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("event_id", sa.String(1024), nullable=False),
        sa.Column("start_utc", UTCDateTime(), nullable=False),
        sa.Column("end_utc", UTCDateTime(), nullable=False),
        sa.Column("is_all_day", sa.Boolean(), nullable=False),
        sa.Column("show_as", sa.String(24), nullable=False),
        sa.Column("is_cancelled", sa.Boolean(), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("sensitivity", sa.String(16), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("series_master_id", sa.String(1024), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "mailbox", "event_id", name="pk_events"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "mailbox"],
            ["calendars.tenant_id", "calendars.mailbox"],
            name="fk_events_tenant_id_mailbox_calendars",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_events_tenant_id_mailbox_start_utc", "events", ["tenant_id", "mailbox", "start_utc"]
    )
    op.create_index(
        "ix_events_tenant_id_mailbox_end_utc", "events", ["tenant_id", "mailbox", "end_utc"]
    )

    op.create_table(
        "calendar_changes",
        sa.Column("seq", _serial(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(200), nullable=False),
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_calendar_changes"),
        sqlite_autoincrement=True,
    )

    op.create_table(
        "inbox",
        sa.Column("id", _serial(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(200), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("subscription_id", sa.String(200), nullable=True),
        sa.Column("mailbox", sa.String(320), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("change_type", sa.String(32), nullable=True),
        sa.Column("lifecycle_event", sa.String(64), nullable=True),
        sa.Column("payload", _json(), nullable=True),
        sa.Column("processed_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_inbox"),
        _tenant_fk("inbox"),
        sa.CheckConstraint("source IN ('alt1', 'alt2')", name="ck_inbox_source"),
        sa.CheckConstraint("kind IN ('change', 'lifecycle', 'resync')", name="ck_inbox_kind"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_inbox_pending",
        "inbox",
        ["id"],
        postgresql_where=sa.text("processed_at IS NULL"),
        sqlite_where=sa.text("processed_at IS NULL"),
    )
    op.create_index("ix_inbox_tenant_id", "inbox", ["tenant_id"])

    op.create_table(
        "jobs",
        sa.Column("id", _serial(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(200), nullable=False),
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("locked_by", sa.String(200), nullable=True),
        sa.Column("locked_until", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "mailbox"],
            ["calendars.tenant_id", "calendars.mailbox"],
            name="fk_jobs_tenant_id_mailbox_calendars",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("kind IN ('refresh', 'full_resync')", name="ck_jobs_kind"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ux_jobs_pending",
        "jobs",
        ["tenant_id", "mailbox"],
        unique=True,
        postgresql_where=sa.text("locked_by IS NULL"),
        sqlite_where=sa.text("locked_by IS NULL"),
    )
    op.create_index("ix_jobs_due_at", "jobs", ["due_at"])

    op.create_table(
        "subscriptions",
        sa.Column("tenant_id", sa.String(200), nullable=False),
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("subscription_id", sa.String(200), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("last_notification_at", UTCDateTime(), nullable=True),
        sa.Column("needs_action", sa.String(16), nullable=False, server_default=sa.text("'none'")),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "mailbox", name="pk_subscriptions"),
        _tenant_fk("subscriptions"),
        sa.CheckConstraint(
            "needs_action IN ('renew', 'recreate', 'none')", name="ck_subscriptions_needs_action"
        ),
    )
    op.create_index("ix_subscriptions_subscription_id", "subscriptions", ["subscription_id"])

    op.create_table(
        "client_states",
        sa.Column("id", _serial(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(200), nullable=False),
        sa.Column("secret", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("retired_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_client_states"),
        _tenant_fk("client_states"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_client_states_tenant_id", "client_states", ["tenant_id"])


def downgrade() -> None:
    for index, table in (
        ("ix_client_states_tenant_id", "client_states"),
        ("ix_subscriptions_subscription_id", "subscriptions"),
        ("ix_jobs_due_at", "jobs"),
        ("ux_jobs_pending", "jobs"),
        ("ix_inbox_tenant_id", "inbox"),
        ("ix_inbox_pending", "inbox"),
        ("ix_events_tenant_id_mailbox_end_utc", "events"),
        ("ix_events_tenant_id_mailbox_start_utc", "events"),
        ("ix_calendars_last_success_at", "calendars"),
        ("ix_rooms_tenant_id_mailbox", "rooms"),
        ("ix_rooms_tenant_id_building_floor", "rooms"),
    ):
        op.drop_index(index, table_name=table)
    for table in (
        "client_states",
        "subscriptions",
        "jobs",
        "inbox",
        "calendar_changes",
        "events",
        "calendars",
        "rooms",
        "tenants",
    ):
        op.drop_table(table)
