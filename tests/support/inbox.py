"""Reading what intake stored: the inbox's rows, the jobs, the subscriptions (with SQL, as a
test may: the service reads them through its ports)."""

from __future__ import annotations

from typing import Any, NamedTuple

import sqlalchemy as sa

from bookingcache.store.sql.schema import events, inbox_batches, jobs, subscriptions
from bookingcache.store.sql.store import SqlStore


async def inbox_batch_rows(store: SqlStore, tenant_id: str | None = None) -> list[Any]:
    """The inbox's rows, oldest first: one per commit round and tenant and source, each holding
    as many notifications as its ``count`` says."""
    query = sa.select(inbox_batches).order_by(inbox_batches.c.id)
    if tenant_id is not None:
        query = query.where(inbox_batches.c.tenant_id == tenant_id)
    async with store.read() as connection:
        rows = list((await connection.execute(query)).all())
    for row in rows:
        assert row._mapping["count"] == len(row.notifications) > 0, row
    return rows


class Stored(NamedTuple):
    """One accepted notification: its batch's tenant and source and its own entry."""

    tenant_id: str
    source: str
    entry: dict[str, Any]


async def stored_notifications(store: SqlStore, tenant_id: str | None = None) -> list[Stored]:
    """Every accepted notification in the order it was stored."""
    return [
        Stored(row.tenant_id, row.source, entry)
        for row in await inbox_batch_rows(store, tenant_id)
        for entry in row.notifications
    ]


async def job_rows(store: SqlStore) -> list[Any]:
    async with store.read() as connection:
        return list((await connection.execute(sa.select(jobs).order_by(jobs.c.id))).all())


async def subscription_rows(store: SqlStore, tenant_id: str) -> dict[str, Any]:
    async with store.read() as connection:
        rows = await connection.execute(
            sa.select(subscriptions).where(subscriptions.c.tenant_id == tenant_id)
        )
        return {row.mailbox: row for row in rows}


async def event_count(store: SqlStore) -> int:
    async with store.read() as connection:
        return int(await connection.scalar(sa.select(sa.func.count()).select_from(events)) or 0)
