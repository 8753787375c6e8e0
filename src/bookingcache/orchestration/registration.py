"""Subscriptions the customer makes itself, registered with the service.

A customer who runs the connector only as a script (``bookingcache-connector subscribe``,
Alternative 1) has no connector for the service to converge through. It registers what it made
instead (``bookingcache-connector register``, or the admin with the same body): each
subscription's id, its mailbox and its expiry, and the clientState the subscriptions carry.
From then on the intake accepts their notifications, the health view tracks their expiry, and
registering again after ``bookingcache-connector renew`` records the renewed expiry. The service
does not converge such a tenant (it has no connector URL); see ``Orchestrator._converge``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from bookingcache.clock import Clock
from bookingcache.domain.subscriptions import RegisteredSubscription
from bookingcache.errors import InvalidInput
from bookingcache.store.jobs import JobQueue
from bookingcache.store.port import Store
from bookingcache.store.subscriptions import Subscriptions


class UnknownMailboxes(InvalidInput):
    """Registered subscriptions naming mailboxes that are not calendars of the tenant."""

    def __init__(self, positions: Sequence[int], mailboxes: Sequence[str]) -> None:
        super().__init__(
            f"{len(mailboxes)} mailbox(es) are not calendars of the tenant: link their rooms "
            "first; nothing was registered"
        )
        self.positions = list(positions)
        self.mailboxes = list(mailboxes)


@dataclass(frozen=True, slots=True)
class Registered:
    """What a registration did: per subscription its calendar, and how many were new to the
    service (their calendars are refreshed once, as after a converge)."""

    rows: list[RegisteredSubscription]
    new: int


async def register_subscriptions(
    *,
    store: Store,
    subscriptions: Subscriptions,
    queue: JobQueue,
    clock: Clock,
    tenant_id: str,
    client_state: str,
    rows: Sequence[RegisteredSubscription],
    grace: dt.timedelta,
) -> Registered:
    """Register ``rows`` for ``tenant_id`` (all or none) and make ``client_state`` the tenant's
    current clientState (the previous one keeps verifying for ``grace``). ``NotFound`` for an
    unknown tenant, ``UnknownMailboxes`` when a mailbox is not one of its calendars."""
    await store.get_tenant(tenant_id)
    names = await store.calendar_names(tenant_id, [row.mailbox for row in rows])
    unknown = [(i, row.mailbox) for i, row in enumerate(rows) if row.mailbox not in names]
    if unknown:
        raise UnknownMailboxes([i for i, _ in unknown], [m for _, m in unknown])
    # One subscription per calendar: the last one named wins, as a later registration would.
    by_calendar: dict[str, RegisteredSubscription] = {}
    for row in rows:
        mailbox = names[row.mailbox]
        by_calendar[mailbox] = RegisteredSubscription(mailbox, row.subscription_id, row.expires_at)
    kept = list(by_calendar.values())
    known = await subscriptions.subscription_ids(tenant_id)
    if await subscriptions.current_client_state(tenant_id) != client_state:
        await subscriptions.rotate_client_state(tenant_id, client_state, grace=grace)
    await subscriptions.register(tenant_id, kept)
    # As after a converge: read each new subscription's calendar from now on, pulling in a
    # refresh already queued and following one that runs.
    new = [
        (tenant_id, row.mailbox) for row in kept if known.get(row.mailbox) != row.subscription_id
    ]
    if new:
        await queue.request_refresh(new, due=clock.now())
    return Registered(rows=kept, new=len(new))
