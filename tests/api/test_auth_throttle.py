"""Failed authentication is throttled per client address and per tenant named by the token
(429 with Retry-After), and a valid credential is never refused by the throttle."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from bookingcache.api.throttle import AuthThrottle, FailureBudget, ThrottleMetrics
from bookingcache.bootstrap import service_app
from bookingcache.clock import FixedClock
from bookingcache.settings import Settings
from tests.support.auth import ADMIN, bearer
from tests.support.problems import assert_problem

# The documented defaults: 20 failures a minute per address after a burst of 20, 100 a minute
# per tenant after a burst of 100.
ADDRESS_BURST = 20
TENANT_BURST = 100


def throttled(app: FastAPI, scope: str) -> float:
    registry: CollectorRegistry = app.state.metrics_registry
    return registry.get_sample_value("bookingcache_auth_throttled_total", {"scope": scope}) or 0.0


def assert_throttled(response: httpx.Response) -> int:
    """A 429 too-many-failed-attempts problem; its Retry-After."""
    body = assert_problem(response, 429)
    assert body["type"] == "urn:bookingcache:problem:too-many-failed-attempts"
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit()
    assert int(retry_after) >= 1
    return int(retry_after)


@pytest.fixture
async def clients(app: FastAPI) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """Clients of the app from addresses of their own, made on first use."""
    made: dict[str, httpx.AsyncClient] = {}

    class Clients(dict[str, httpx.AsyncClient]):
        def __missing__(self, address: str) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=app, client=(address, 40000))
            client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
            made[address] = self[address] = client
            return client

    yield Clients()
    for client in made.values():
        await client.aclose()


def availability(tenant_id: str) -> str:
    return f"/v1/tenants/{tenant_id}/rooms/r1/availability"


async def test_failures_from_one_address_get_429_until_retry_after_has_passed(
    app: FastAPI, client: httpx.AsyncClient, clock: FixedClock
) -> None:
    for n in range(ADDRESS_BURST):
        assert_problem(await client.get("/v1/tenants", headers=bearer(f"guess-{n}")), 401)
    retry_after = assert_throttled(await client.get("/v1/tenants", headers=bearer("guess-x")))
    # 20 a minute: one more failure is allowed every 3 seconds.
    assert retry_after == 3
    assert throttled(app, "address") == 1
    # Other authenticated routes answer for the same address's budget.
    assert_throttled(await client.get(availability("contoso"), headers=bearer("guess-y")))
    clock.advance(dt.timedelta(seconds=retry_after - 1))
    assert_throttled(await client.get("/v1/tenants", headers=bearer("guess-z")))
    clock.advance(dt.timedelta(seconds=1))
    assert_problem(await client.get("/v1/tenants", headers=bearer("guess-z")), 401)
    assert_throttled(await client.get("/v1/tenants", headers=bearer("guess-zz")))
    # Another address has its own budget.
    other = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("192.0.2.7", 40000)),
        base_url="http://testserver",
    )
    async with other:
        assert_problem(await other.get("/v1/tenants", headers=bearer("guess")), 401)


async def test_valid_tokens_get_through_from_a_throttled_address_for_a_throttled_tenant(
    app: FastAPI,
    clients: dict[str, httpx.AsyncClient],
    tenant: dict[str, Any],
) -> None:
    tenant_id = tenant["id"]
    token = tenant["secrets"]["read_token"]
    room = {"mailbox": "room.1@contoso.com", "name": "Ada"}
    put = await clients["198.51.100.1"].put(
        f"/v1/tenants/{tenant_id}/rooms/r1", json=room, headers=ADMIN
    )
    assert put.status_code == 201
    # Guesses at the tenant's token from many addresses spend the tenant's budget, and those
    # of the last address spend its own too.
    for n in range(TENANT_BURST):
        address = f"203.0.113.{n // 10}"
        response = await clients[address].get(
            availability(tenant_id), headers=bearer(f"{tenant_id}.guess-{n}")
        )
        assert_problem(response, 401)
    shared = clients["203.0.113.9"]
    for n in range(ADDRESS_BURST - 10):
        assert_problem(await shared.get("/v1/tenants", headers=bearer(f"guess-{n}")), 401)
    assert_throttled(await shared.get("/v1/tenants", headers=bearer("guess")))
    assert_throttled(
        await clients["203.0.113.200"].get(
            availability(tenant_id), headers=bearer(f"{tenant_id}.guess")
        )
    )
    # The tenant's real read token and the admin token, from that same address: answered.
    for _ in range(3):
        response = await shared.get(availability(tenant_id), headers=bearer(token))
        assert response.status_code == 200, response.text
        response = await shared.get(f"/v1/tenants/{tenant_id}", headers=ADMIN)
        assert response.status_code == 200, response.text
        response = await shared.get(availability(tenant_id), headers=ADMIN)
        assert response.status_code == 200, response.text
    # A valid token presented where it may not go is a 403, not a throttled failure.
    assert_problem(await shared.get("/v1/tenants", headers=bearer(token)), 403)


async def test_failures_spread_over_many_addresses_against_one_tenant_are_throttled(
    app: FastAPI, clients: dict[str, httpx.AsyncClient], tenant_id: str
) -> None:
    # The tenant need not exist: one that does not is throttled the same way.
    for n in range(TENANT_BURST):
        response = await clients[f"2001:db8::{n}"].get(
            availability(tenant_id), headers=bearer(f"{tenant_id}.guess-{n}")
        )
        assert_problem(response, 401)
    retry_after = assert_throttled(
        await clients["2001:db8::ffff"].get(
            availability(tenant_id), headers=bearer(f"{tenant_id}.guess")
        )
    )
    # 100 a minute: one more every 0.6 s, announced in whole seconds.
    assert retry_after == 1
    assert throttled(app, "tenant") == 1
    assert throttled(app, "address") == 0
    # Guesses naming another tenant, from a fresh address, are still just wrong.
    response = await clients["2001:db8::fffe"].get(
        availability(tenant_id), headers=bearer("other.guess")
    )
    assert_problem(response, 401)


async def test_forwarded_for_is_ignored_unless_proxies_are_trusted(
    client: httpx.AsyncClient,
) -> None:
    for n in range(ADDRESS_BURST):
        headers = {**bearer(f"guess-{n}"), "X-Forwarded-For": f"192.0.2.{n}"}
        assert_problem(await client.get("/v1/tenants", headers=headers), 401)
    headers = {**bearer("guess"), "X-Forwarded-For": "192.0.2.250"}
    assert_throttled(await client.get("/v1/tenants", headers=headers))


async def test_behind_a_trusted_proxy_the_address_it_saw_is_the_client(
    settings: Settings, clock: FixedClock
) -> None:
    app = service_app(settings.model_copy(update={"trusted_proxy_hops": 1}), clock=clock)
    async with app.router.lifespan_context(app):
        proxy = httpx.ASGITransport(app=app, client=("10.0.0.1", 40000))
        async with httpx.AsyncClient(transport=proxy, base_url="http://testserver") as client:
            # The proxy appends the address it saw; what the client wrote before is its own.
            for n in range(ADDRESS_BURST):
                headers = {**bearer(f"guess-{n}"), "X-Forwarded-For": f"spoof-{n}, 192.0.2.1"}
                assert_problem(await client.get("/v1/tenants", headers=headers), 401)
            headers = {**bearer("guess"), "X-Forwarded-For": "spoof, 192.0.2.1"}
            assert_throttled(await client.get("/v1/tenants", headers=headers))
            headers = {**bearer("guess"), "X-Forwarded-For": "192.0.2.1, 192.0.2.2"}
            assert_problem(await client.get("/v1/tenants", headers=headers), 401)


def test_client_address_with_proxy_hops() -> None:
    def address(hops: int, *forwarded: str) -> str | None:
        settings = Settings(trusted_proxy_hops=hops)
        throttle = AuthThrottle(settings, ThrottleMetrics.of(CollectorRegistry()))
        headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
        return throttle.client_address({"client": ("10.0.0.9", 1), "headers": headers})

    assert address(0, "192.0.2.1") == "10.0.0.9"
    assert address(1) == "10.0.0.9"
    assert address(1, "192.0.2.1") == "192.0.2.1"
    assert address(1, "a, b", "192.0.2.1") == "192.0.2.1"
    assert address(2, "a, 192.0.2.1", "10.0.0.2") == "192.0.2.1"
    assert address(2, "10.0.0.2") == "10.0.0.9"


def test_the_tracked_keys_are_bounded_forgetting_the_least_recent_failure_first() -> None:
    budget = FailureBudget(per_minute=60, burst=1, max_tracked=3)
    now = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    for key in ("a", "b", "c"):
        budget.take(key, now)
    assert budget.wait_s("a", now) == pytest.approx(1.0)
    budget.take("d", now)  # "a" failed least recently: forgotten
    assert len(budget) == 3
    assert budget.wait_s("a", now) == 0
    assert budget.wait_s("b", now) == pytest.approx(1.0)
    assert budget.wait_s("d", now) == pytest.approx(1.0)
    # Refilled at the rate, up to the burst.
    assert budget.wait_s("b", now + dt.timedelta(seconds=0.5)) == pytest.approx(0.5)
    assert budget.wait_s("b", now + dt.timedelta(hours=1)) == 0
