"""The database schema, shared by SQLite and PostgreSQL (SQLAlchemy Core tables).

Every instant is stored as UTC through ``UTCDateTime`` and read back as an aware UTC datetime
on both engines. The Alembic migrations in ``store/migrations`` create exactly these tables; a
contract test compares the migrated database with this metadata.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# A directory (tenant id or verified domain) or client id of the graph source.
GRAPH_NAME = 256


class UTCDateTime(TypeDecorator[dt.datetime]):
    """An aware instant stored as UTC.

    PostgreSQL keeps ``timestamptz``. SQLite has no time type, so the instant is stored as a
    fixed-width ISO 8601 text in UTC (``2026-01-05T09:30:00.000000+00:00``): it sorts and
    compares as text in time order, and ``fromisoformat`` parses it straight back into an aware
    UTC datetime, which keeps reading thousands of events cheap. Naive datetimes are refused
    rather than guessed.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(32))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, dt.datetime) or value.tzinfo is None:
            raise ValueError(f"an aware datetime is required, got {value!r}")
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return value.isoformat(timespec="microseconds")
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if type(value) is str:
            value = dt.datetime.fromisoformat(value)
        assert isinstance(value, dt.datetime)
        if value.tzinfo is dt.UTC:
            return value
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def _json() -> TypeEngine[Any]:
    return JSON().with_variant(JSONB(), "postgresql")


def _serial() -> TypeEngine[int]:
    # SQLite only auto-assigns INTEGER PRIMARY KEY columns; PostgreSQL gets a 64-bit identity.
    return BigInteger().with_variant(Integer(), "sqlite")


ID = 200  # tenant and room ids
MAILBOX = 320  # an SMTP address, or a directory object id
EVENT_ID = 1024

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("name", String(300), nullable=False),
    Column("event_source", String(16), nullable=False),
    Column("connector_url", Text, nullable=True),
    Column("title_policy", String(16), nullable=False),
    Column("default_time_zone", String(64), nullable=False),
    Column("staleness_bound_s", Integer, nullable=False),
    # Sealed (``store.sealing``, migration 0008). After a rotation the previous secret keeps
    # verifying until ``previous_signing_secret_until`` (migration 0009).
    Column("signing_secret", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("previous_signing_secret", Text, nullable=True),
    Column("previous_signing_secret_until", UTCDateTime(), nullable=True),
    # The way in and the graph source's access, set through the admin API (migration 0010).
    # The client secret and the certificate's private key are sealed.
    Column("notification_mode", String(16), nullable=False, server_default=text("'direct'")),
    Column("graph_directory_tenant", String(GRAPH_NAME), nullable=True),
    Column("graph_client_id", String(GRAPH_NAME), nullable=True),
    Column("graph_permission", String(16), nullable=True),
    Column("graph_client_secret", Text, nullable=True),
    Column("graph_private_key", Text, nullable=True),
    Column("graph_certificate_thumbprint", String(128), nullable=True),
    Column("graph_revision", Integer, nullable=False, server_default=text("0")),
    # The last write of the tenant's rooms (linked, replaced, unlinked); migration 0013.
    Column("rooms_changed_at", UTCDateTime(), nullable=True),
)

# A tenant's named read tokens, only as SHA-256 hashes (migration 0009). ``last_used_at`` is
# written by the processes that check them, late by up to their flush interval.
read_tokens = Table(
    "read_tokens",
    metadata,
    Column("tenant_id", String(ID), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("last_used_at", UTCDateTime(), nullable=True),
)

# Every admin change: who (a fingerprint of the admin credential), what, when, from where; never
# a secret value (migration 0009).
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", _serial(), primary_key=True, autoincrement=True),
    Column("at", UTCDateTime(), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("client", String(64), nullable=True),
    Column("action", String(64), nullable=False),
    Column("tenant_id", String(ID), nullable=True),
    Column("target", String(MAILBOX), nullable=True),
    Column("details", _json(), nullable=False),
    Index(None, "tenant_id", "id"),
    sqlite_autoincrement=True,
)

rooms = Table(
    "rooms",
    metadata,
    Column("tenant_id", String(ID), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("room_id", String(ID), primary_key=True),
    Column("mailbox", String(MAILBOX), nullable=False),
    Column("name", String(300), nullable=False),
    Column("building", String(ID), nullable=True),
    Column("floor", String(64), nullable=True),
    Column("geometry", _json(), nullable=True),
    Column("time_zone", String(64), nullable=True),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("capacity", Integer, nullable=True),
    Index(None, "tenant_id", "building", "floor"),
    Index(None, "tenant_id", "mailbox"),
)

calendars = Table(
    "calendars",
    metadata,
    Column("tenant_id", String(ID), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("mailbox", String(MAILBOX), primary_key=True),
    # The room's own zone; NULL means "the tenant's default time zone".
    Column("time_zone", String(64), nullable=True),
    Column("last_refresh_at", UTCDateTime(), nullable=True),
    Column("last_success_at", UTCDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("window_start", UTCDateTime(), nullable=True),
    Column("window_end", UTCDateTime(), nullable=True),
    Column("delta_link", Text, nullable=True),
    Column("consecutive_failures", Integer, nullable=False, server_default=text("0")),
    Column("created_at", UTCDateTime(), nullable=False),
    Index(None, "last_success_at"),
)

events = Table(
    "events",
    metadata,
    Column("tenant_id", String(ID), primary_key=True),
    Column("mailbox", String(MAILBOX), primary_key=True),
    Column("event_id", String(EVENT_ID), primary_key=True),
    Column("start_utc", UTCDateTime(), nullable=False),
    Column("end_utc", UTCDateTime(), nullable=False),
    Column("is_all_day", Boolean, nullable=False),
    Column("show_as", String(24), nullable=False),
    Column("is_cancelled", Boolean, nullable=False),
    Column("title", Text, nullable=True),
    Column("sensitivity", String(16), nullable=False),
    Column("type", String(16), nullable=False),
    Column("series_master_id", String(EVENT_ID), nullable=True),
    ForeignKeyConstraint(
        ["tenant_id", "mailbox"],
        ["calendars.tenant_id", "calendars.mailbox"],
        ondelete="CASCADE",
    ),
    Index(None, "tenant_id", "mailbox", "start_utc"),
    Index(None, "tenant_id", "mailbox", "end_utc"),
)

# The change feed. Not tied to tenants by a foreign key: deleting a tenant or unlinking a
# calendar appends rows here so that other processes' read models evict it.
calendar_changes = Table(
    "calendar_changes",
    metadata,
    Column("seq", _serial(), primary_key=True, autoincrement=True),
    Column("tenant_id", String(ID), nullable=False),
    Column("mailbox", String(MAILBOX), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    sqlite_autoincrement=True,  # never reuse a sequence number after rows are pruned
)

# The inbox: what intake accepted, one row per commit round and tenant and source, the round's
# notifications as a JSON list (migration 0004). Their refreshes are the ``jobs`` rows created in
# the same transaction; see docs/storage.md for the entries' fields.
inbox_batches = Table(
    "inbox_batches",
    metadata,
    Column("id", _serial(), primary_key=True, autoincrement=True),
    Column("tenant_id", String(ID), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("source", String(8), nullable=False),
    Column("count", Integer, nullable=False),
    Column("notifications", _json(), nullable=False),
    CheckConstraint("source IN ('alt1', 'alt2')", name="source"),
    Index(None, "tenant_id"),
    sqlite_autoincrement=True,
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", _serial(), primary_key=True, autoincrement=True),
    Column("tenant_id", String(ID), nullable=False),
    Column("mailbox", String(MAILBOX), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("due_at", UTCDateTime(), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("locked_by", String(200), nullable=True),
    Column("locked_until", UTCDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    # The newest change notification the pending job stands for (a claim holds the job back
    # while they keep coming; the claim records it on the subscription).
    Column("last_notified_at", UTCDateTime(), nullable=True),
    ForeignKeyConstraint(
        ["tenant_id", "mailbox"],
        ["calendars.tenant_id", "calendars.mailbox"],
        ondelete="CASCADE",
    ),
    CheckConstraint("kind IN ('refresh', 'full_resync')", name="kind"),
    # At most one *pending* (unclaimed) job per calendar: enqueueing coalesces into it, while
    # a claimed job may run beside it.
    Index(
        "ux_jobs_pending",
        "tenant_id",
        "mailbox",
        unique=True,
        postgresql_where=text("locked_by IS NULL"),
        sqlite_where=text("locked_by IS NULL"),
    ),
    # The claimed rows by calendar: a claim's "is this calendar's refresh running?" check.
    Index(
        "ix_jobs_claimed",
        "tenant_id",
        "mailbox",
        postgresql_where=text("locked_by IS NOT NULL"),
        sqlite_where=text("locked_by IS NOT NULL"),
    ),
    Index(None, "due_at"),
    sqlite_autoincrement=True,
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("tenant_id", String(ID), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("mailbox", String(MAILBOX), primary_key=True),
    Column("subscription_id", String(200), nullable=True),
    Column("expires_at", UTCDateTime(), nullable=True),
    Column("status", String(32), nullable=False),
    Column("error", Text, nullable=True),
    Column("last_notification_at", UTCDateTime(), nullable=True),
    Column("needs_action", String(16), nullable=False, server_default=text("'none'")),
    Column("updated_at", UTCDateTime(), nullable=False),
    CheckConstraint("needs_action IN ('renew', 'recreate', 'none')", name="needs_action"),
    Index(None, "subscription_id"),
)

# The webhook-ids of accepted relay calls inside the replay window (migration 0003).
relay_messages = Table(
    "relay_messages",
    metadata,
    Column("tenant_id", String(ID), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("message_id", String(256), primary_key=True),
    Column("sent_at", UTCDateTime(), nullable=False),
    Index(None, "sent_at"),
)

client_states = Table(
    "client_states",
    metadata,
    Column("id", _serial(), primary_key=True, autoincrement=True),
    Column("tenant_id", String(ID), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("secret", Text, nullable=False),  # sealed (``store.sealing``, migration 0008)
    Column("created_at", UTCDateTime(), nullable=False),
    Column("retired_at", UTCDateTime(), nullable=True),
    Index(None, "tenant_id"),
    sqlite_autoincrement=True,
)

# --- the cluster (migration 0011) ---------------------------------------------------------------
# One row per periodic duty (convergence, sweep, silence, retention): who holds it until when.
# ``token`` grows by one at every change of holder; a holder's writes compare it (fencing), and
# ``cursor`` is the duty's own progress (the change feed position the silence duty judged to).
duty_leases = Table(
    "duty_leases",
    metadata,
    Column("duty", String(64), primary_key=True),
    Column("holder", String(200), nullable=True),
    Column("token", BigInteger, nullable=False, server_default=text("0")),
    Column("expires_at", UTCDateTime(), nullable=True),
    Column("acquired_at", UTCDateTime(), nullable=True),
    Column("cursor", BigInteger, nullable=True),
)

# The live processes: each start is a new incarnation of a stable instance id, and heartbeats.
# Job claims are made under the incarnation (``jobs.locked_by`` is ``<incarnation>/<claim>``).
process_heartbeats = Table(
    "process_heartbeats",
    metadata,
    Column("incarnation", String(200), primary_key=True),
    Column("instance_id", String(200), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("heartbeat_at", UTCDateTime(), nullable=False),
    Index(None, "instance_id"),
)

# The silence duty's judgement of each calendar (``orchestration.silence``).
calendar_silence = Table(
    "calendar_silence",
    metadata,
    Column("tenant_id", String(ID), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("mailbox", String(MAILBOX), primary_key=True),
    Column("baseline", UTCDateTime(), nullable=False),
    Column("unannounced", Integer, nullable=False, server_default=text("0")),
    Column("silent_since", UTCDateTime(), nullable=True),
)

# Each tenant's converge timing: when it was last converged and when a debounced converge is
# due (a room change, a notification from an unknown subscription), whichever process asked.
tenant_converges = Table(
    "tenant_converges",
    metadata,
    Column("tenant_id", String(ID), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("last_at", UTCDateTime(), nullable=True),
    Column("due_at", UTCDateTime(), nullable=True),
)
