"""Fixtures of the sync tests: a tenant with room calendars in the shared ``store`` fixture."""

from __future__ import annotations

import pytest

from bookingcache.clock import FixedClock
from bookingcache.domain.tenancy import EventSource, Room, Tenant, TenantSecrets
from bookingcache.store.sql import SqlStore
from bookingcache.sync.queue import JobQueue

SIGNING_SECRET = "whsec_" + "c3luYy10ZXN0LXNpZ25pbmctc2VjcmV0LTMyYnl0ZXM="
TENANT = "contoso"


async def add_tenant(
    store: SqlStore,
    tenant_id: str = TENANT,
    *,
    rooms: int = 3,
    source: EventSource = EventSource.CONNECTOR,
    connector_url: str | None = "https://connector.test",
    time_zone: str = "UTC",
) -> list[str]:
    """Create a tenant with ``rooms`` rooms; returns their mailboxes."""
    await store.create_tenant(
        Tenant(
            id=tenant_id,
            name=tenant_id.title(),
            event_source=source,
            connector_url=connector_url,
            default_time_zone=time_zone,
        ),
        TenantSecrets(signing_secret=SIGNING_SECRET, read_token=f"read-{tenant_id}-0123456789"),
    )
    mailboxes = [f"room-{index}@{tenant_id}.example" for index in range(rooms)]
    await store.import_rooms(
        tenant_id,
        [
            Room(tenant_id=tenant_id, room_id=f"r{index}", mailbox=mailbox, name=f"Room {index}")
            for index, mailbox in enumerate(mailboxes)
        ],
    )
    return mailboxes


@pytest.fixture
def queue(store: SqlStore, clock: FixedClock) -> JobQueue:
    return JobQueue(store, clock=clock, coalesce_s=0.2, lease_s=30.0, max_attempts=3)
