"""A tenant's settings are read once per expiry however many requests need them at that moment,
a request that goes away does not cancel the read the others wait for, and a change heard while
the read is in flight is not hidden by it."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from typing import cast

import pytest

from bookingcache.clock import FixedClock
from bookingcache.domain.tenancy import Tenant
from bookingcache.errors import NotFound
from bookingcache.read.access import AccessCache
from bookingcache.store.port import Store

TTL = dt.timedelta(seconds=1)


class _Tenants:
    """``get_tenant`` of a store, held open until the test lets it answer."""

    def __init__(self) -> None:
        self.tenants = {"acme": Tenant(id="acme", name="Acme")}
        self.reads = 0
        self.gate = asyncio.Event()

    async def get_tenant(self, tenant_id: str) -> Tenant:
        self.reads += 1
        await self.gate.wait()
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            raise NotFound(f"tenant {tenant_id!r} not found")
        return tenant


@pytest.fixture
def store() -> _Tenants:
    return _Tenants()


@pytest.fixture
def access(store: _Tenants, clock: FixedClock) -> AccessCache:
    return AccessCache(cast(Store, store), clock, ttl=TTL)


async def test_requests_in_flight_at_expiry_share_one_read(
    store: _Tenants, access: AccessCache, clock: FixedClock
) -> None:
    store.gate.set()
    assert (await access.tenant("acme")).name == "Acme"
    assert store.reads == 1
    clock.advance(TTL)
    store.gate.clear()
    waiting = [asyncio.create_task(access.tenant("acme")) for _ in range(16)]
    await asyncio.sleep(0)
    store.gate.set()
    assert {tenant.name for tenant in await asyncio.gather(*waiting)} == {"Acme"}
    assert store.reads == 2
    # Kept for the time to live again: no further read.
    assert (await access.tenant("acme")).name == "Acme"
    assert store.reads == 2


async def test_a_request_that_goes_away_leaves_the_read_to_the_others(
    store: _Tenants, access: AccessCache
) -> None:
    first = asyncio.create_task(access.tenant("acme"))
    second = asyncio.create_task(access.tenant("acme"))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    store.gate.set()
    assert (await second).name == "Acme"
    assert first.cancelled()
    assert store.reads == 1


async def test_an_unknown_tenant_fails_every_waiter_and_is_not_kept(
    store: _Tenants, access: AccessCache
) -> None:
    waiting = [asyncio.create_task(access.tenant("nobody")) for _ in range(3)]
    await asyncio.sleep(0)
    store.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(result, NotFound) for result in results)
    assert store.reads == 1
    with pytest.raises(NotFound):
        await access.tenant("nobody")
    assert store.reads == 2


async def test_a_change_heard_during_the_read_is_read_again(
    store: _Tenants, access: AccessCache
) -> None:
    before = asyncio.create_task(access.tenant("acme"))
    await asyncio.sleep(0)
    # The tenant changes while that read is in flight; its answer may predate the change.
    store.tenants["acme"] = dataclasses.replace(store.tenants["acme"], name="Acme Corp")
    access.forget("acme")
    after = asyncio.create_task(access.tenant("acme"))
    await asyncio.sleep(0)
    store.gate.set()
    await before
    assert (await after).name == "Acme Corp"
    assert store.reads == 2
    # Neither answer was kept as if it were current beyond the change: the next call reads
    # what the second read stored.
    assert (await access.tenant("acme")).name == "Acme Corp"
    assert store.reads == 2
