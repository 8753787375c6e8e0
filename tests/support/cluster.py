"""What the cluster tests read of a PostgreSQL database their processes share: the calendars an
instance has claimed, the calendars refreshed since an instant, and which instance holds a
duty now; and the tenant they share."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import httpx
import sqlalchemy as sa

from bookingcache.clock import SystemClock
from bookingcache.domain.tenancy import EventSource, GraphAccess, Room, Tenant, TenantSecrets
from bookingcache.store.sql.schema import calendars, duty_leases, jobs
from bookingcache.store.sql.store import SqlStore
from bookingcache.tools.bench.freshness import graph_env
from tests.support.databases import SECRETS_KEY
from tests.support.tenants import SIGNING_SECRET, TENANT


async def claims_of(store: SqlStore, instance: str) -> set[str]:
    """The mailboxes whose jobs are claimed by an incarnation of ``instance``."""
    async with store.read() as connection:
        rows = await connection.execute(
            sa.select(jobs.c.mailbox).where(jobs.c.locked_by.like(f"{instance}@%"))
        )
        return set(rows.scalars())


async def fresh_since(store: SqlStore, since: dt.datetime) -> set[str]:
    """The mailboxes refreshed successfully at ``since`` or later."""
    async with store.read() as connection:
        rows = await connection.execute(
            sa.select(calendars.c.mailbox).where(calendars.c.last_success_at >= since)
        )
        return set(rows.scalars())


async def duty_holder(store: SqlStore, duty: str) -> str | None:
    """The instance holding ``duty`` under a lease that has not run out, or None."""
    async with store.read() as connection:
        row = (
            await connection.execute(
                sa.select(duty_leases.c.holder, duty_leases.c.expires_at).where(
                    duty_leases.c.duty == duty
                )
            )
        ).first()
    if row is None or row.holder is None or row.expires_at < SystemClock().now():
        return None
    return str(row.holder).split("@", 1)[0]


async def graph_tenant(store: SqlStore, directory_tenant: str, mailboxes: list[str]) -> None:
    """The tests' tenant on the ``graph`` source, reading the emulator's directory with the
    service's app, with one room ``r<index>`` per mailbox."""
    await store.create_tenant(
        Tenant(
            id=TENANT,
            name="Contoso",
            event_source=EventSource.GRAPH,
            connector_url=None,
            graph=GraphAccess(directory_tenant=directory_tenant),
        ),
        TenantSecrets(signing_secret=SIGNING_SECRET, read_token=f"read-{TENANT}-0123456789"),
    )
    await store.import_rooms(
        TENANT,
        [
            Room(tenant_id=TENANT, room_id=f"r{index}", mailbox=upn, name=f"Room {index}")
            for index, upn in enumerate(mailboxes)
        ],
    )


def process_env(database_url: str, emulator: dict[str, Any]) -> dict[str, str]:
    """The environment of a cluster test's service processes: the shared database, the test's
    secrets key, and the emulator (its banner) as Microsoft Graph with the service's app."""
    return {
        **os.environ,
        "BOOKINGCACHE_LOG_LEVEL": "INFO",
        "BOOKINGCACHE_ENVIRONMENT": "development",
        "BOOKINGCACHE_SECRETS_KEY": SECRETS_KEY,
        "BOOKINGCACHE_DATABASE_URL": database_url,
        **graph_env(emulator),
    }


def duty_runs(base_url: str, duty: str) -> float:
    """``bookingcache_duty_runs_total`` of ``duty`` in the metrics of the process at
    ``base_url`` (0 before its first run)."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(f'bookingcache_duty_runs_total{{duty="{duty}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
