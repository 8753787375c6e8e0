"""The subscriptions port: which Graph subscription belongs to which tenant and room calendar,
what the connector last reported of it, what lifecycle notifications asked for, and the
``clientState`` secrets a tenant's subscriptions carry. ``store.sql.subscriptions.
SqlSubscriptions`` fills it; it is the one writer of the ``subscriptions`` table.

A tenant has one current clientState; rotating it retires the previous one after a grace
period, during which both verify, so notifications already queued at Graph under the old
secret are still accepted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from bookingcache.domain.subscriptions import ConvergedSubscription, Mark, RegisteredSubscription


@dataclass(frozen=True, slots=True)
class SubscriptionOwner:
    """The calendar a subscription notifies about."""

    tenant_id: str
    mailbox: str


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


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a tenant's rooms are onboarded: ``linked`` rooms, of which ``subscribed`` (their
    calendar has a subscription that has not failed or ended) and ``fresh`` (their calendar was
    read successfully within the tenant's staleness bound)."""

    linked: int = 0
    subscribed: int = 0
    fresh: int = 0


class Subscriptions(Protocol):
    # --- what intake needs --------------------------------------------------------------------
    async def lookup(self, subscription_ids: Collection[str]) -> dict[str, SubscriptionOwner]:
        """The owners of those of ``subscription_ids`` the service knows."""
        ...

    async def client_states(self, tenant_id: str) -> list[str]:
        """The clientState secrets that verify for the tenant now, newest first."""
        ...

    # --- what the orchestration writes --------------------------------------------------------
    async def record(
        self,
        tenant_id: str,
        mailbox: str,
        subscription_id: str,
        *,
        expires_at: dt.datetime | None,
        status: str = "active",
    ) -> None:
        """Remember that ``subscription_id`` notifies about ``mailbox`` of ``tenant_id``
        (replacing the calendar's previous subscription). ``NotFound`` when no room of the
        tenant links that calendar."""
        ...

    async def register(self, tenant_id: str, rows: Sequence[RegisteredSubscription]) -> None:
        """Remember the customer's own subscriptions, all or none, in one transaction: each
        replaces its calendar's subscription, clears its error and lifecycle mark, and has the
        status ``registered``. ``NotFound`` when one names a mailbox no room of the tenant
        links (``mailbox`` must be the calendar's spelling)."""
        ...

    async def save(
        self,
        tenant_id: str,
        rows: Sequence[ConvergedSubscription],
        *,
        answered: Mapping[str, Mark],
    ) -> None:
        """Store the connector's rows. A successful row settles its calendar's lifecycle mark
        only if the mark is the one in ``answered`` (read before the call), unchanged since:
        a mark stored while the call was out, which the call could not answer, is kept for
        the next converge."""
        ...

    async def fail(self, tenant_id: str, mailboxes: Collection[str], error: str) -> None:
        """The connector call failed as a whole: every wanted mailbox carries the error (its
        subscription, if any, is kept: it may well still deliver)."""
        ...

    async def drop_unwanted(self, tenant_id: str, wanted: Collection[str]) -> list[str]:
        """Forget the subscriptions of calendars no room links any more; returns them."""
        ...

    async def rotate_client_state(
        self, tenant_id: str, secret: str, *, grace: dt.timedelta = dt.timedelta(hours=4)
    ) -> None:
        """Make ``secret`` the tenant's current clientState; the secrets in use so far stay
        valid for ``grace`` (Graph retries a delivery for up to 4 hours)."""
        ...

    # --- what the orchestration reads ---------------------------------------------------------
    async def current_client_state(self, tenant_id: str) -> str | None: ...

    async def subscription_ids(self, tenant_id: str) -> dict[str, str | None]:
        """Mailbox -> the subscription id the service knows for it."""
        ...

    async def marks(self, tenant_id: str) -> dict[str, Mark]:
        """Mailbox -> the lifecycle mark (``renew`` / ``recreate``) of the tenant's
        subscriptions that have one."""
        ...

    async def tenants_needing_action(self, *, expiring_before: dt.datetime) -> set[str]:
        """Tenants with a subscription marked by a lifecycle event, or expiring soon."""
        ...

    async def calendars(self, tenant_id: str | None = None) -> list[CalendarRecord]:
        """Every linked calendar (of one tenant, or all) with its subscription and its last
        change notification (the subscription's record, or a pending refresh's if newer)."""
        ...

    async def progress(self, fresh_since: Mapping[str, dt.datetime]) -> dict[str, Progress]:
        """The onboarding progress of each tenant of ``fresh_since`` (tenant -> the oldest
        successful read that still counts as fresh), counted in the database; a tenant
        without rooms has zero counts."""
        ...

    async def last_notification(self, tenant_id: str, mailbox: str) -> dt.datetime | None:
        """When the calendar's newest change notification arrived, as far as it is known."""
        ...

    async def last_notifications(
        self, calendars: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], dt.datetime]:
        """``last_notification`` of many calendars (tenant, mailbox) in one read; a calendar
        with none known is left out."""
        ...
