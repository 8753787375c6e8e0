"""Fixtures of the store contract suite: a tenant with linked rooms on every engine."""

from __future__ import annotations

import pytest

from bookingcache.domain.tenancy import Room, Tenant, TenantSecrets
from bookingcache.store.sql.store import SqlStore
from tests.support.tenants import ACME as TENANT
from tests.support.tenants import ACME_READ_TOKEN as READ_TOKEN
from tests.support.tenants import ACME_SIGNING_SECRET as SIGNING_SECRET


@pytest.fixture
async def tenant(store: SqlStore) -> Tenant:
    """Tenant ``acme`` (default zone Europe/Berlin) with rooms r1..r3 linked to a@, b@, c@."""
    created = await store.create_tenant(
        Tenant(id=TENANT, name="Acme", default_time_zone="Europe/Berlin"),
        TenantSecrets(signing_secret=SIGNING_SECRET, read_token=READ_TOKEN),
    )
    for number, mailbox in enumerate(("a@acme.test", "b@acme.test", "c@acme.test"), start=1):
        await store.put_room(
            Room(
                tenant_id=TENANT,
                room_id=f"r{number}",
                mailbox=mailbox,
                name=f"Room {number}",
                building="HQ",
                floor=str(number % 2),
            )
        )
    return created
