"""What the orchestration keeps in the ``subscriptions`` table beside the registry the intake
reads (``store.subscriptions``): the connector's answer per mailbox, failures included, and the
reads the timer and the health view need."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from bookingcache.clock import Clock
from bookingcache.orchestration.connector import FAILED, SubscriptionRow
from bookingcache.store.schema import calendars, jobs, subscriptions
from bookingcache.store.sql import SqlStore

_MAX_ERROR = 2000


@dataclass(frozen=True, slots=True)
class CalendarRecord:
    """One linked calendar with its subscription, as the health view reads it."""

    tenant_id: str
    mailbox: str
    subscription_id: str | None
    expires_at: dt.datetime | None
    status: str | None
    error: str | None
    needs_action: str | None
    last_notification_at: dt.datetime | None
    last_refresh_at: dt.datetime | None
    last_success_at: dt.datetime | None
    refresh_error: str | None
    consecutive_failures: int


class SubscriptionRecords:
    def __init__(self, store: SqlStore, *, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def _insert(self) -> Any:
        if self._store.dialect == "postgresql":
            return postgresql.insert(subscriptions)
        return sqlite.insert(subscriptions)

    async def save(
        self, tenant_id: str, rows: Sequence[SubscriptionRow], *, started_at: dt.datetime
    ) -> None:
        """Store the connector's rows. A lifecycle mark recorded after ``started_at`` (while
        the call was out) is kept for the next converge."""
        now = self._clock.now()
        async with self._store.write() as connection:
            for row in rows:
                failed = row.status == FAILED
                fields: dict[str, Any] = {
                    "expires_at": row.expiration,
                    "status": row.status,
                    "error": (row.error or "failed")[:_MAX_ERROR] if failed else None,
                    "updated_at": now,
                }
                insert = self._insert().values(
                    tenant_id=tenant_id,
                    mailbox=row.mailbox,
                    subscription_id=row.subscription_id,
                    needs_action="none",
                    **fields,
                )
                changes: dict[str, Any] = dict(fields)
                if row.subscription_id or not failed:
                    changes["subscription_id"] = row.subscription_id
                if not failed:
                    changes["needs_action"] = sa.case(
                        (subscriptions.c.updated_at <= started_at, "none"),
                        else_=subscriptions.c.needs_action,
                    )
                await connection.execute(
                    insert.on_conflict_do_update(
                        index_elements=["tenant_id", "mailbox"], set_=changes
                    )
                )

    async def fail(self, tenant_id: str, mailboxes: Collection[str], error: str) -> None:
        """The connector call failed as a whole: every wanted mailbox carries the error (its
        subscription, if any, is kept: it may well still deliver)."""
        now = self._clock.now()
        text = error[:_MAX_ERROR]
        async with self._store.write() as connection:
            for mailbox in mailboxes:
                insert = self._insert().values(
                    tenant_id=tenant_id,
                    mailbox=mailbox,
                    subscription_id=None,
                    expires_at=None,
                    status=FAILED,
                    error=text,
                    updated_at=now,
                )
                await connection.execute(
                    insert.on_conflict_do_update(
                        index_elements=["tenant_id", "mailbox"],
                        set_={"error": text, "updated_at": now},
                    )
                )

    async def drop_unwanted(self, tenant_id: str, wanted: Collection[str]) -> list[str]:
        """Forget the subscriptions of calendars no room links any more."""
        keep = {m.casefold() for m in wanted}
        async with self._store.write() as connection:
            rows = await connection.execute(
                sa.select(subscriptions.c.mailbox).where(subscriptions.c.tenant_id == tenant_id)
            )
            gone = [row.mailbox for row in rows if row.mailbox.casefold() not in keep]
            if gone:
                await connection.execute(
                    sa.delete(subscriptions).where(
                        subscriptions.c.tenant_id == tenant_id,
                        subscriptions.c.mailbox.in_(gone),
                    )
                )
        return gone

    async def subscription_ids(self, tenant_id: str) -> dict[str, str | None]:
        """Mailbox -> the subscription id the service knows for it."""
        async with self._store.read() as connection:
            rows = await connection.execute(
                sa.select(subscriptions.c.mailbox, subscriptions.c.subscription_id).where(
                    subscriptions.c.tenant_id == tenant_id
                )
            )
            return {row.mailbox: row.subscription_id for row in rows}

    async def renewals_asked(self, tenant_id: str) -> set[str]:
        """The tenant's mailboxes whose subscription Graph asked to reauthorize
        (``reauthorizationRequired`` marked it ``renew``)."""
        async with self._store.read() as connection:
            rows = await connection.execute(
                sa.select(subscriptions.c.mailbox).where(
                    subscriptions.c.tenant_id == tenant_id,
                    subscriptions.c.needs_action == "renew",
                )
            )
            return {row.mailbox for row in rows}

    async def tenants_needing_action(self, *, expiring_before: dt.datetime) -> set[str]:
        """Tenants with a subscription marked by a lifecycle event, or expiring soon."""
        async with self._store.read() as connection:
            rows = await connection.execute(
                sa.select(subscriptions.c.tenant_id)
                .where(
                    sa.or_(
                        subscriptions.c.needs_action != "none",
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
        """Every linked calendar (of one tenant, or all) with its subscription and its last
        change notification (the subscription's record, or a pending refresh's if newer)."""
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

    async def last_notification(self, tenant_id: str, mailbox: str) -> dt.datetime | None:
        async with self._store.read() as connection:
            recorded = await connection.scalar(
                sa.select(subscriptions.c.last_notification_at).where(
                    subscriptions.c.tenant_id == tenant_id, subscriptions.c.mailbox == mailbox
                )
            )
            pending = await connection.scalar(
                sa.select(sa.func.max(jobs.c.last_notified_at)).where(
                    jobs.c.tenant_id == tenant_id, jobs.c.mailbox == mailbox
                )
            )
        return _newest(recorded, pending)


def _newest(recorded: dt.datetime | None, pending: Any) -> dt.datetime | None:
    """The later of a subscription's recorded last notification and a pending job's."""
    values = [value for value in (recorded, _utc(pending)) if value is not None]
    return max(values) if values else None


def _utc(value: Any) -> dt.datetime | None:
    """A max() over a UTC column comes back raw (text on SQLite)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
