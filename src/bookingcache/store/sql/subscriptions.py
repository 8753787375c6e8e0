"""``SqlSubscriptions``: the subscriptions port over the ``subscriptions`` and ``client_states``
tables, and the one writer of ``subscriptions``.

Besides the port's own transactions, three writes happen inside transactions other adapters
open, through the functions at the end of this module: the inbox resolves the mailbox of a
lifecycle notification and marks the subscription for the orchestration
(``resolve_mailboxes``, ``mark_lifecycle``), and a job claim records the newest change
notification of each calendar it claims (``note_notifications``).

It runs a little over 500 lines because it is the one writer of the table: split up, the
writes would again sit in several modules, as they did before.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from bookingcache.clock import Clock
from bookingcache.domain.notifications import InboxItem, NotificationKind
from bookingcache.domain.subscriptions import (
    FAILED,
    NO_ACTION,
    RECREATE,
    REGISTERED,
    RENEW,
    ConvergedSubscription,
    Mark,
    RegisteredSubscription,
)
from bookingcache.errors import InvalidInput, NotFound
from bookingcache.store.sql.lists import among
from bookingcache.store.sql.progress import count_progress
from bookingcache.store.sql.rows import as_utc
from bookingcache.store.sql.schema import (
    MAILBOX,
    calendars,
    client_states,
    jobs,
    subscriptions,
    tenants,
)
from bookingcache.store.sql.store import SqlStore
from bookingcache.store.subscriptions import CalendarRecord, Progress, SubscriptionOwner

ACTIVE = "active"
MAX_SUBSCRIPTION_ID = 200
MAX_CLIENT_STATE = 128  # Graph's limit on clientState
_MAX_ERROR = 2000
_LOOKUP_CHUNK = 500


def _upsert(connection: Connection, values: Mapping[str, Any]) -> Any:
    """``INSERT ... ON CONFLICT`` of one ``subscriptions`` row, as the connection's dialect
    spells it; the caller adds ``on_conflict_do_update``."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(subscriptions).values(**values)


def _save_row(
    connection: Connection,
    tenant_id: str,
    mailbox: str,
    *,
    inserted: Mapping[str, Any],
    updated: Mapping[str, Any],
) -> None:
    """Create the calendar's row with ``inserted`` or change the existing one by ``updated``."""
    statement = _upsert(connection, {"tenant_id": tenant_id, "mailbox": mailbox, **inserted})
    connection.execute(
        statement.on_conflict_do_update(index_elements=["tenant_id", "mailbox"], set_=updated)
    )


class SqlSubscriptions:
    def __init__(self, store: SqlStore, *, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    # --- what intake needs --------------------------------------------------------------------
    async def lookup(self, subscription_ids: Collection[str]) -> dict[str, SubscriptionOwner]:
        wanted = sorted({s for s in subscription_ids if 0 < len(s) <= MAX_SUBSCRIPTION_ID})
        found: dict[str, SubscriptionOwner] = {}
        if not wanted:
            return found
        async with self._store.read() as connection:
            for offset in range(0, len(wanted), _LOOKUP_CHUNK):
                chunk = wanted[offset : offset + _LOOKUP_CHUNK]
                rows = await connection.execute(
                    sa.select(
                        subscriptions.c.subscription_id,
                        subscriptions.c.tenant_id,
                        subscriptions.c.mailbox,
                    ).where(
                        among(
                            subscriptions.c.subscription_id, chunk, dialect=connection.dialect.name
                        )
                    )
                )
                for row in rows:
                    found[row.subscription_id] = SubscriptionOwner(row.tenant_id, row.mailbox)
        return found

    async def client_states(self, tenant_id: str) -> list[str]:
        now = self._clock.now()
        async with self._store.read() as connection:
            rows = await connection.execute(
                sa.select(client_states.c.secret)
                .where(
                    client_states.c.tenant_id == tenant_id,
                    sa.or_(client_states.c.retired_at.is_(None), client_states.c.retired_at > now),
                )
                .order_by(client_states.c.id.desc())
            )
            return [self._store.box.open(row.secret) for row in rows]

    # --- what the orchestration writes --------------------------------------------------------
    async def record(
        self,
        tenant_id: str,
        mailbox: str,
        subscription_id: str,
        *,
        expires_at: dt.datetime | None,
        status: str = ACTIVE,
    ) -> None:
        if not subscription_id or len(subscription_id) > MAX_SUBSCRIPTION_ID:
            raise InvalidInput(f"subscription ids must be 1 to {MAX_SUBSCRIPTION_ID} characters")
        if expires_at is not None and expires_at.tzinfo is None:
            raise InvalidInput("expires_at must be an aware datetime")
        if len(mailbox) > MAILBOX:
            raise InvalidInput(f"mailboxes are at most {MAILBOX} characters")
        values = {
            "subscription_id": subscription_id,
            "expires_at": expires_at,
            "status": status,
            "error": None,
            "needs_action": NO_ACTION,
            "updated_at": self._clock.now(),
        }

        def work(connection: Connection) -> None:
            known = connection.scalar(
                sa.select(calendars.c.mailbox).where(
                    calendars.c.tenant_id == tenant_id, calendars.c.mailbox == mailbox
                )
            )
            if known is None:
                raise NotFound(f"no room of tenant {tenant_id!r} is linked to {mailbox!r}")
            _save_row(connection, tenant_id, mailbox, inserted=values, updated=values)

        await self._store.transaction(work)

    async def register(self, tenant_id: str, rows: Sequence[RegisteredSubscription]) -> None:
        for row in rows:
            if not row.subscription_id or len(row.subscription_id) > MAX_SUBSCRIPTION_ID:
                raise InvalidInput(
                    f"subscription ids must be 1 to {MAX_SUBSCRIPTION_ID} characters"
                )
            if row.expires_at.tzinfo is None:
                raise InvalidInput("expires_at must be an aware datetime")
        now = self._clock.now()

        def work(connection: Connection) -> None:
            wanted = sorted({row.mailbox for row in rows})
            known: set[str] = set()
            for offset in range(0, len(wanted), _LOOKUP_CHUNK):
                known.update(
                    connection.scalars(
                        sa.select(calendars.c.mailbox).where(
                            calendars.c.tenant_id == tenant_id,
                            calendars.c.mailbox.in_(wanted[offset : offset + _LOOKUP_CHUNK]),
                        )
                    )
                )
            missing = [mailbox for mailbox in wanted if mailbox not in known]
            if missing:
                raise NotFound(f"no room of tenant {tenant_id!r} is linked to {missing[0]!r}")
            for row in rows:
                values = {
                    "subscription_id": row.subscription_id,
                    "expires_at": row.expires_at,
                    "status": REGISTERED,
                    "error": None,
                    "needs_action": NO_ACTION,
                    "updated_at": now,
                }
                _save_row(connection, tenant_id, row.mailbox, inserted=values, updated=values)

        await self._store.transaction(work)

    async def save(
        self,
        tenant_id: str,
        rows: Sequence[ConvergedSubscription],
        *,
        answered: Mapping[str, Mark],
    ) -> None:
        now = self._clock.now()

        def work(connection: Connection) -> None:
            for row in rows:
                fields: dict[str, Any] = {
                    "expires_at": row.expires_at,
                    "status": row.status,
                    "error": (row.error or "failed")[:_MAX_ERROR] if row.failed else None,
                    "updated_at": now,
                }
                changes: dict[str, Any] = dict(fields)
                if row.subscription_id or not row.failed:
                    changes["subscription_id"] = row.subscription_id
                mark = answered.get(row.mailbox)
                if mark is not None and not row.failed:
                    # Compare and clear: the mark the call answered, if nothing wrote the
                    # row since it was read.
                    changes["needs_action"] = sa.case(
                        (
                            sa.and_(
                                subscriptions.c.needs_action == mark.action,
                                subscriptions.c.updated_at == mark.at,
                            ),
                            NO_ACTION,
                        ),
                        else_=subscriptions.c.needs_action,
                    )
                _save_row(
                    connection,
                    tenant_id,
                    row.mailbox,
                    inserted={
                        "subscription_id": row.subscription_id,
                        "needs_action": NO_ACTION,
                        **fields,
                    },
                    updated=changes,
                )

        await self._store.transaction(work)

    async def fail(self, tenant_id: str, mailboxes: Collection[str], error: str) -> None:
        now = self._clock.now()
        text = error[:_MAX_ERROR]

        def work(connection: Connection) -> None:
            for mailbox in mailboxes:
                _save_row(
                    connection,
                    tenant_id,
                    mailbox,
                    inserted={
                        "subscription_id": None,
                        "expires_at": None,
                        "status": FAILED,
                        "error": text,
                        "updated_at": now,
                    },
                    updated={"error": text, "updated_at": now},
                )

        await self._store.transaction(work)

    async def drop_unwanted(self, tenant_id: str, wanted: Collection[str]) -> list[str]:
        keep = {m.casefold() for m in wanted}

        def work(connection: Connection) -> list[str]:
            rows = connection.execute(
                sa.select(subscriptions.c.mailbox).where(subscriptions.c.tenant_id == tenant_id)
            )
            gone = [row.mailbox for row in rows if row.mailbox.casefold() not in keep]
            if gone:
                connection.execute(
                    sa.delete(subscriptions).where(
                        subscriptions.c.tenant_id == tenant_id,
                        subscriptions.c.mailbox.in_(gone),
                    )
                )
            return gone

        return await self._store.transaction(work)

    async def rotate_client_state(
        self, tenant_id: str, secret: str, *, grace: dt.timedelta = dt.timedelta(hours=4)
    ) -> None:
        if not secret or len(secret) > MAX_CLIENT_STATE:
            raise InvalidInput(f"a clientState must be 1 to {MAX_CLIENT_STATE} characters")
        now = self._clock.now()
        sealed = self._store.box.seal(secret)

        def work(connection: Connection) -> None:
            exists = connection.scalar(sa.select(tenants.c.id).where(tenants.c.id == tenant_id))
            if exists is None:
                raise NotFound(f"tenant {tenant_id!r} not found")
            connection.execute(
                sa.update(client_states)
                .where(client_states.c.tenant_id == tenant_id, client_states.c.retired_at.is_(None))
                .values(retired_at=now + grace)
            )
            connection.execute(
                sa.insert(client_states).values(
                    tenant_id=tenant_id, secret=sealed, created_at=now, retired_at=None
                )
            )

        await self._store.transaction(work)

    # --- what the orchestration reads ---------------------------------------------------------
    async def current_client_state(self, tenant_id: str) -> str | None:
        async with self._store.read() as connection:
            secret = await connection.scalar(
                sa.select(client_states.c.secret)
                .where(client_states.c.tenant_id == tenant_id, client_states.c.retired_at.is_(None))
                .order_by(client_states.c.id.desc())
                .limit(1)
            )
        return None if secret is None else self._store.box.open(str(secret))

    async def subscription_ids(self, tenant_id: str) -> dict[str, str | None]:
        async with self._store.read() as connection:
            rows = await connection.execute(
                sa.select(subscriptions.c.mailbox, subscriptions.c.subscription_id).where(
                    subscriptions.c.tenant_id == tenant_id
                )
            )
            return {row.mailbox: row.subscription_id for row in rows}

    async def marks(self, tenant_id: str) -> dict[str, Mark]:
        async with self._store.read() as connection:
            rows = await connection.execute(
                sa.select(
                    subscriptions.c.mailbox,
                    subscriptions.c.needs_action,
                    subscriptions.c.updated_at,
                ).where(
                    subscriptions.c.tenant_id == tenant_id,
                    subscriptions.c.needs_action != NO_ACTION,
                )
            )
            return {row.mailbox: Mark(row.needs_action, row.updated_at) for row in rows}

    async def tenants_needing_action(self, *, expiring_before: dt.datetime) -> set[str]:
        async with self._store.read() as connection:
            rows = await connection.execute(
                sa.select(subscriptions.c.tenant_id)
                .where(
                    sa.or_(
                        subscriptions.c.needs_action != NO_ACTION,
                        sa.and_(
                            subscriptions.c.expires_at.is_not(None),
                            subscriptions.c.expires_at < expiring_before,
                        ),
                    )
                )
                .distinct()
            )
            return {row.tenant_id for row in rows}

    async def calendars(self, tenant_id: str | None = None) -> list[CalendarRecord]:
        pending = sa.select(
            jobs.c.tenant_id, jobs.c.mailbox, sa.func.max(jobs.c.last_notified_at).label("at")
        ).group_by(jobs.c.tenant_id, jobs.c.mailbox)
        if tenant_id is not None:
            pending = pending.where(jobs.c.tenant_id == tenant_id)
        notified = pending.subquery()
        query = (
            sa.select(
                calendars.c.tenant_id,
                calendars.c.mailbox,
                calendars.c.last_refresh_at,
                calendars.c.last_success_at,
                calendars.c.last_error,
                calendars.c.consecutive_failures,
                subscriptions.c.subscription_id,
                subscriptions.c.expires_at,
                subscriptions.c.status,
                subscriptions.c.error,
                subscriptions.c.needs_action,
                subscriptions.c.last_notification_at,
                notified.c.at,
            )
            .select_from(
                calendars.outerjoin(
                    subscriptions,
                    sa.and_(
                        subscriptions.c.tenant_id == calendars.c.tenant_id,
                        subscriptions.c.mailbox == calendars.c.mailbox,
                    ),
                ).outerjoin(
                    notified,
                    sa.and_(
                        notified.c.tenant_id == calendars.c.tenant_id,
                        notified.c.mailbox == calendars.c.mailbox,
                    ),
                )
            )
            .order_by(calendars.c.tenant_id, calendars.c.mailbox)
        )
        if tenant_id is not None:
            query = query.where(calendars.c.tenant_id == tenant_id)
        async with self._store.read() as connection:
            rows = await connection.execute(query)
            return [
                CalendarRecord(
                    tenant_id=row.tenant_id,
                    mailbox=row.mailbox,
                    subscription_id=row.subscription_id,
                    expires_at=row.expires_at,
                    status=row.status,
                    error=row.error,
                    needs_action=row.needs_action,
                    last_notification_at=_newest(row.last_notification_at, row.at),
                    last_refresh_at=row.last_refresh_at,
                    last_success_at=row.last_success_at,
                    refresh_error=row.last_error,
                    consecutive_failures=int(row.consecutive_failures or 0),
                )
                for row in rows
            ]

    async def progress(self, fresh_since: Mapping[str, dt.datetime]) -> dict[str, Progress]:
        async with self._store.read() as connection:
            return await count_progress(connection, fresh_since, now=self._clock.now())

    async def last_notification(self, tenant_id: str, mailbox: str) -> dt.datetime | None:
        return (await self.last_notifications([(tenant_id, mailbox)])).get((tenant_id, mailbox))

    async def last_notifications(
        self, calendars: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], dt.datetime]:
        by_tenant: dict[str, list[str]] = {}
        for tenant_id, mailbox in sorted(set(calendars)):
            by_tenant.setdefault(tenant_id, []).append(mailbox)
        found: dict[tuple[str, str], dt.datetime] = {}

        def keep(key: tuple[str, str], at: dt.datetime) -> None:
            if key not in found or at > found[key]:
                found[key] = at

        async with self._store.read() as connection:
            dialect = connection.dialect.name
            for tenant_id, mailboxes in by_tenant.items():
                for offset in range(0, len(mailboxes), _LOOKUP_CHUNK):
                    chunk = mailboxes[offset : offset + _LOOKUP_CHUNK]
                    recorded = await connection.execute(
                        sa.select(
                            subscriptions.c.mailbox, subscriptions.c.last_notification_at
                        ).where(
                            subscriptions.c.tenant_id == tenant_id,
                            among(subscriptions.c.mailbox, chunk, dialect=dialect),
                            subscriptions.c.last_notification_at.is_not(None),
                        )
                    )
                    for row in recorded:
                        keep((tenant_id, row.mailbox), row.last_notification_at)
                    # A pending refresh's notification is newer than the record until it is
                    # done.
                    pending = await connection.execute(
                        sa.select(jobs.c.mailbox, sa.func.max(jobs.c.last_notified_at))
                        .where(
                            jobs.c.tenant_id == tenant_id,
                            among(jobs.c.mailbox, chunk, dialect=dialect),
                        )
                        .group_by(jobs.c.mailbox)
                    )
                    for mailbox, at in pending:
                        if at is not None:
                            keep((tenant_id, mailbox), as_utc(at))
        return found


# --- inside other adapters' transactions ------------------------------------------------------
def resolve_mailboxes(connection: Connection, items: Sequence[InboxItem]) -> list[InboxItem]:
    """Fill in the mailbox of items that name only their subscription (lifecycle events carry
    no resource), from the subscriptions the service recorded."""
    unknown = {
        (item.tenant_id, item.subscription_id)
        for item in items
        if item.mailbox is None and item.subscription_id
    }
    if not unknown:
        return list(items)
    rows = connection.execute(
        sa.select(
            subscriptions.c.tenant_id, subscriptions.c.subscription_id, subscriptions.c.mailbox
        ).where(
            among(
                subscriptions.c.subscription_id,
                {sub for _, sub in unknown},
                dialect=connection.dialect.name,
            )
        )
    )
    found = {(row.tenant_id, row.subscription_id): row.mailbox for row in rows}
    return [
        dataclasses.replace(item, mailbox=found.get((item.tenant_id, item.subscription_id)))
        if item.mailbox is None and item.subscription_id
        else item
        for item in items
    ]


def mark_lifecycle(connection: Connection, items: Sequence[InboxItem], *, now: dt.datetime) -> None:
    """Mark subscriptions for the orchestration as their lifecycle notifications ask:
    ``subscriptionRemoved`` → ``recreate``; ``reauthorizationRequired`` → ``renew``, never
    downgrading ``recreate`` (re-creating also renews)."""
    for item in items:
        keep: tuple[str, ...]
        if item.kind is NotificationKind.SUBSCRIPTION_REMOVED:
            action, keep = RECREATE, ()
        elif item.kind is NotificationKind.REAUTHORIZATION_REQUIRED:
            action, keep = RENEW, (RECREATE,)
        else:
            continue
        if item.mailbox:
            target = sa.and_(
                subscriptions.c.tenant_id == item.tenant_id,
                subscriptions.c.mailbox == item.mailbox,
            )
        elif item.subscription_id:
            target = sa.and_(
                subscriptions.c.tenant_id == item.tenant_id,
                subscriptions.c.subscription_id == item.subscription_id,
            )
        else:
            continue
        statement = sa.update(subscriptions).where(target)
        if keep:
            statement = statement.where(subscriptions.c.needs_action.not_in(keep))
        connection.execute(statement.values(needs_action=action, updated_at=now))


def note_notifications(
    connection: Connection, notified: Mapping[tuple[str, str], dt.datetime]
) -> None:
    """Record, per (tenant, mailbox), the newest change notification as the subscription's
    ``last_notification_at`` (never moving it back)."""
    if not notified:
        return
    connection.execute(
        _NOTE_NOTIFICATION,
        [{"t": tenant, "m": mailbox, "at": at} for (tenant, mailbox), at in notified.items()],
    )


# Built once: every claim of a worker runs it, and building it costs more than running it.
_NOTE_NOTIFICATION = (
    sa.update(subscriptions)
    .where(
        subscriptions.c.tenant_id == sa.bindparam("t"),
        subscriptions.c.mailbox == sa.bindparam("m"),
        sa.or_(
            subscriptions.c.last_notification_at.is_(None),
            subscriptions.c.last_notification_at < sa.bindparam("at"),
        ),
    )
    .values(last_notification_at=sa.bindparam("at"))
)


def _newest(recorded: dt.datetime | None, pending: Any) -> dt.datetime | None:
    """The later of a subscription's recorded last notification and a pending job's (a max()
    over a UTC column, which comes back raw)."""
    values = [value for value in (recorded, None if pending is None else as_utc(pending)) if value]
    return max(values) if values else None
