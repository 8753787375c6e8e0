"""How far each tenant's rooms are onboarded (``Subscriptions.progress``), counted by the
database in one grouped query per 500 tenants: rooms linked, of which subscribed and fresh."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bookingcache.domain.subscriptions import FAILED
from bookingcache.store.sql.schema import UTCDateTime, calendars, rooms, subscriptions
from bookingcache.store.sql.windows import chunked
from bookingcache.store.subscriptions import Progress

_TENANTS_PER_QUERY = 500


async def count_progress(
    connection: AsyncConnection, fresh_since: Mapping[str, dt.datetime], *, now: dt.datetime
) -> dict[str, Progress]:
    """Each tenant of ``fresh_since`` (tenant -> the oldest successful read still fresh) with
    its counts; a room counts as subscribed while its calendar's subscription has an id, has
    not failed and has not ended at ``now``."""
    found = {tenant_id: Progress() for tenant_id in fresh_since}
    subscribed = sa.and_(
        subscriptions.c.subscription_id.is_not(None),
        subscriptions.c.status != FAILED,
        sa.or_(subscriptions.c.expires_at.is_(None), subscriptions.c.expires_at > now),
    )
    joined = rooms.outerjoin(
        calendars,
        sa.and_(calendars.c.tenant_id == rooms.c.tenant_id, calendars.c.mailbox == rooms.c.mailbox),
    ).outerjoin(
        subscriptions,
        sa.and_(
            subscriptions.c.tenant_id == rooms.c.tenant_id,
            subscriptions.c.mailbox == rooms.c.mailbox,
        ),
    )
    for chunk in chunked(list(fresh_since), _TENANTS_PER_QUERY):
        cutoff = sa.case(
            {tenant_id: sa.literal(fresh_since[tenant_id], UTCDateTime()) for tenant_id in chunk},
            value=rooms.c.tenant_id,
        )
        query = (
            sa.select(
                rooms.c.tenant_id,
                sa.func.count(),
                sa.func.sum(sa.case((subscribed, 1), else_=0)),
                sa.func.sum(sa.case((calendars.c.last_success_at >= cutoff, 1), else_=0)),
            )
            .select_from(joined)
            .where(rooms.c.tenant_id.in_(chunk))
            .group_by(rooms.c.tenant_id)
        )
        for tenant_id, linked, subscribed_rooms, fresh_rooms in await connection.execute(query):
            found[tenant_id] = Progress(
                linked=int(linked),
                subscribed=int(subscribed_rooms or 0),
                fresh=int(fresh_rooms or 0),
            )
    return found
