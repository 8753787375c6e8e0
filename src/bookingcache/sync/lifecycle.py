"""Lifecycle notifications (graph-protocol.md section 4), recorded in the intake transaction:

- ``missed`` → an immediate full resync of the calendar (the queue makes its job a full resync);
- ``subscriptionRemoved`` → a full resync, and the subscription is marked ``recreate``;
- ``reauthorizationRequired`` → the subscription is marked ``renew``.

Re-creating and renewing are the subscription orchestration's work; it reads ``needs_action``.
``recreate`` is never downgraded to ``renew``: re-creating also renews.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bookingcache.store.schema import subscriptions
from bookingcache.sync.model import InboxItem, NotificationKind

RENEW = "renew"
RECREATE = "recreate"


async def resolve_mailboxes(
    connection: AsyncConnection, items: Sequence[InboxItem]
) -> list[InboxItem]:
    """Fill in the mailbox of items that name only their subscription (lifecycle events carry
    no resource), from the subscriptions the service recorded."""
    unknown = {
        (item.tenant_id, item.subscription_id)
        for item in items
        if item.mailbox is None and item.subscription_id
    }
    if not unknown:
        return list(items)
    rows = await connection.execute(
        sa.select(
            subscriptions.c.tenant_id, subscriptions.c.subscription_id, subscriptions.c.mailbox
        ).where(subscriptions.c.subscription_id.in_({sub for _, sub in unknown}))
    )
    found = {(row.tenant_id, row.subscription_id): row.mailbox for row in rows}
    return [
        dataclasses.replace(item, mailbox=found.get((item.tenant_id, item.subscription_id)))
        if item.mailbox is None and item.subscription_id
        else item
        for item in items
    ]


def _target(item: InboxItem) -> sa.ColumnElement[bool] | None:
    if item.mailbox:
        return sa.and_(
            subscriptions.c.tenant_id == item.tenant_id, subscriptions.c.mailbox == item.mailbox
        )
    if item.subscription_id:
        return sa.and_(
            subscriptions.c.tenant_id == item.tenant_id,
            subscriptions.c.subscription_id == item.subscription_id,
        )
    return None


async def record(
    connection: AsyncConnection, items: Sequence[InboxItem], *, now: dt.datetime
) -> None:
    """Mark subscriptions for the orchestration according to the lifecycle items."""
    for item in items:
        keep: tuple[str, ...]
        if item.kind is NotificationKind.SUBSCRIPTION_REMOVED:
            action, keep = RECREATE, ()
        elif item.kind is NotificationKind.REAUTHORIZATION_REQUIRED:
            action, keep = RENEW, (RECREATE,)
        else:
            continue
        target = _target(item)
        if target is None:
            continue
        statement = sa.update(subscriptions).where(target)
        if keep:
            statement = statement.where(subscriptions.c.needs_action.not_in(keep))
        await connection.execute(statement.values(needs_action=action, updated_at=now))
