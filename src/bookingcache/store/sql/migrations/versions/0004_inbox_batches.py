"""The inbox as one row per commit round and tenant, and the refresh state on the job row.

An intake commit round used to write one ``inbox`` row per notification, under three indexes;
now it writes one ``inbox_batches`` row per tenant and source holding the round's
notifications as a JSON list, and gives each notified calendar's pending job the time of its
newest change notification (``jobs.last_notified_at``), which is what a claim's hold-back
needs. Whether a notification was processed is the job's state, as it already was: the job
is created in the same transaction as the inbox row and deleted when its refresh succeeds.

Existing rows move over one batch per row. Each calendar's newest change notification is
kept as its subscription's ``last_notification_at``. The downgrade expands the batches back
into rows, all marked processed (the pending work is in ``jobs`` either way).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from bookingcache.store.sql.schema import UTCDateTime

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_CHUNK = 1000


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _serial() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _batches() -> sa.TableClause:
    return sa.table(
        "inbox_batches",
        sa.column("id", sa.Integer()),
        sa.column("tenant_id", sa.String()),
        sa.column("received_at", UTCDateTime()),
        sa.column("source", sa.String()),
        sa.column("count", sa.Integer()),
        sa.column("notifications", _json()),
    )


def _old_inbox() -> sa.TableClause:
    return sa.table(
        "inbox",
        sa.column("id", sa.Integer()),
        sa.column("tenant_id", sa.String()),
        sa.column("received_at", UTCDateTime()),
        sa.column("source", sa.String()),
        sa.column("subscription_id", sa.String()),
        sa.column("mailbox", sa.String()),
        sa.column("kind", sa.String()),
        sa.column("change_type", sa.String()),
        sa.column("lifecycle_event", sa.String()),
        sa.column("payload", _json()),
        sa.column("processed_at", UTCDateTime()),
    )


def upgrade() -> None:
    op.create_table(
        "inbox_batches",
        sa.Column("id", _serial(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(200), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("notifications", _json(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_inbox_batches"),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_inbox_batches_tenant_id_tenants",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("source IN ('alt1', 'alt2')", name="ck_inbox_batches_source"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_inbox_batches_tenant_id", "inbox_batches", ["tenant_id"])
    op.add_column("jobs", sa.Column("last_notified_at", UTCDateTime(), nullable=True))

    connection = op.get_bind()
    old = _old_inbox()
    subscriptions = sa.table(
        "subscriptions",
        sa.column("tenant_id", sa.String()),
        sa.column("mailbox", sa.String()),
        sa.column("last_notification_at", UTCDateTime()),
    )
    # Each calendar's newest change notification lives on as its subscription's record.
    newest = (
        sa.select(sa.func.max(old.c.received_at))
        .where(
            old.c.tenant_id == subscriptions.c.tenant_id,
            old.c.mailbox == subscriptions.c.mailbox,
            old.c.kind == "change",
        )
        .scalar_subquery()
    )
    connection.execute(
        sa.update(subscriptions)
        .where(subscriptions.c.last_notification_at.is_(None))
        .values(last_notification_at=newest)
    )
    batches = _batches()
    for rows in _in_chunks(connection, old):
        connection.execute(
            sa.insert(batches),
            [
                {
                    "tenant_id": row.tenant_id,
                    "received_at": row.received_at,
                    "source": row.source,
                    "count": 1,
                    "notifications": [_entry(row)],
                }
                for row in rows
            ],
        )
    op.drop_index("ix_inbox_pending_calendar", table_name="inbox")
    op.drop_index("ix_inbox_tenant_id", table_name="inbox")
    op.drop_table("inbox")


def _in_chunks(connection: sa.Connection, table: sa.TableClause) -> Iterator[Sequence[sa.Row[Any]]]:
    """All rows of ``table`` in order of ``id``, ``_CHUNK`` at a time."""
    last = 0
    while True:
        rows = connection.execute(
            sa.select(table).where(table.c.id > last).order_by(table.c.id).limit(_CHUNK)
        ).all()
        if not rows:
            return
        last = rows[-1].id
        yield rows


def _entry(row: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "subscriptionId": row.subscription_id,
        "mailbox": row.mailbox,
        "kind": row.lifecycle_event or row.kind,
        "changeType": row.change_type,
    }
    payload = row.payload or {}
    entry["resource"] = payload.get("resource")
    entry["id"] = payload.get("id")
    return {key: value for key, value in entry.items() if value is not None}


def downgrade() -> None:
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
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_inbox_tenant_id_tenants", ondelete="CASCADE"
        ),
        sa.CheckConstraint("source IN ('alt1', 'alt2')", name="ck_inbox_source"),
        sa.CheckConstraint("kind IN ('change', 'lifecycle', 'resync')", name="ck_inbox_kind"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_inbox_pending_calendar",
        "inbox",
        ["tenant_id", "mailbox", "id"],
        postgresql_where=sa.text("processed_at IS NULL"),
        sqlite_where=sa.text("processed_at IS NULL"),
    )
    op.create_index("ix_inbox_tenant_id", "inbox", ["tenant_id"])
    connection = op.get_bind()
    batches = _batches()
    old = _old_inbox()
    for rows in _in_chunks(connection, batches):
        expanded = [
            _row(row.tenant_id, row.received_at, row.source, entry)
            for row in rows
            for entry in row.notifications
        ]
        if expanded:
            connection.execute(sa.insert(old), expanded)
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("last_notified_at")
    op.drop_index("ix_inbox_batches_tenant_id", table_name="inbox_batches")
    op.drop_table("inbox_batches")


def _row(
    tenant_id: str, received_at: dt.datetime, source: str, entry: dict[str, Any]
) -> dict[str, Any]:
    kind = entry.get("kind", "change")
    lifecycle = kind not in ("change", "resync")
    payload = {key: entry[key] for key in ("resource", "id") if entry.get(key) is not None}
    return {
        "tenant_id": tenant_id,
        "received_at": received_at,
        "source": source,
        "subscription_id": entry.get("subscriptionId"),
        "mailbox": entry.get("mailbox"),
        "kind": "lifecycle" if lifecycle else kind,
        "change_type": entry.get("changeType"),
        "lifecycle_event": kind if lifecycle else None,
        "payload": payload or None,
        "processed_at": received_at,
    }
