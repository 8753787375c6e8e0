"""A tenant's row as the migrations before 0010 wrote it, for the migration tests that upgrade
a database holding one."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bookingcache.store.sql.schema import UTCDateTime

TENANTS_0009 = sa.table(
    "tenants",
    *(sa.column(name) for name in ("id", "name", "event_source", "title_policy")),
    *(sa.column(name) for name in ("default_time_zone", "staleness_bound_s", "signing_secret")),
    sa.column("created_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
)


async def insert_tenant(
    connection: AsyncConnection, tenant_id: str, *, event_source: str, at: dt.datetime
) -> None:
    await connection.execute(
        sa.insert(TENANTS_0009),
        {
            "id": tenant_id,
            "name": tenant_id.title(),
            "event_source": event_source,
            "title_policy": "show",
            "default_time_zone": "UTC",
            "staleness_bound_s": 3600,
            "signing_secret": "sealed elsewhere",
            "created_at": at,
            "updated_at": at,
        },
    )
