"""A notification naming a subscription the service does not know converges the tenant only
when it is authentic (one of the tenant's clientStates), and at most once per
``react_min_interval_s``: a stranger who knows a webhook URL cannot make the service call the
tenant's connector. The connector here is a recording server on a loopback port."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI

from bookingcache.bootstrap import service_app
from bookingcache.clock import FixedClock
from bookingcache.settings import OrchestrationSettings, Settings
from bookingcache.store.sql.store import SqlStore
from tests.support.connectors import RecordingConnector, recording_connector
from tests.support.tenants import Org, add_org

INTERVAL_S = 0.5


@pytest.fixture
def connector() -> Iterator[tuple[RecordingConnector, str]]:
    with recording_connector() as served:
        yield served


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "environment": "development",  # the connector listens on loopback, over http
            "orchestration": OrchestrationSettings(
                tick_s=0.05, debounce_s=0.0, react_min_interval_s=INTERVAL_S
            ),
        }
    )


@pytest.fixture
async def app(settings: Settings, clock: FixedClock) -> AsyncIterator[FastAPI]:
    app = service_app(settings, clock=clock)
    # The converge timing is kept in the database by the service's clock (any process may
    # hold the converge duty): the pinned clock moves on as time passes here.
    moving = asyncio.create_task(_keep_pace(clock))
    try:
        async with app.router.lifespan_context(app):
            yield app
    finally:
        moving.cancel()
        await asyncio.gather(moving, return_exceptions=True)


async def _keep_pace(clock: FixedClock) -> None:
    last = time.monotonic()
    while True:
        await asyncio.sleep(0.01)
        now = time.monotonic()
        clock.advance(dt.timedelta(seconds=now - last))
        last = now


async def _quiet(connector: RecordingConnector, *, at_least: int) -> int:
    """Wait until ``at_least`` converges came and no other for a while; their count."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        seen = len(connector.times)
        await asyncio.sleep(INTERVAL_S * 3)
        if len(connector.times) == seen >= at_least:
            return seen
    raise AssertionError(f"the converges did not settle: {connector.times}")


async def _tenant(app: FastAPI, connector_url: str) -> tuple[Org, str]:
    store = app.state.services.store
    assert isinstance(store, SqlStore)
    org = await add_org(store, connector_url=connector_url)
    orchestrator = app.state.services.orchestrator
    state = await orchestrator.client_state(org.id)
    return org, state


def _batch(client_state: str | None, index: int) -> bytes:
    note: dict[str, str] = {
        "subscriptionId": f"unknown-{index}",
        "changeType": "updated",
        "resource": "Users/x/Events/y",
    }
    if client_state is not None:
        note["clientState"] = client_state
    return json.dumps({"value": [note]}).encode()


async def _flood(
    client: httpx.AsyncClient, org: Org, states: list[str | None], *, seconds: float
) -> int:
    sent = 0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        response = await client.post(
            f"/graph/notifications/{org.id}",
            content=_batch(states[sent % len(states)], sent),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 202
        sent += 1
        await asyncio.sleep(0.01)
    return sent


def _ignored(app: FastAPI, reason: str) -> float:
    value = app.state.metrics_registry.get_sample_value(
        "bookingcache_intake_ignored_notifications_total", {"reason": reason}
    )
    return value or 0.0


async def test_a_strangers_flood_of_unknown_subscriptions_never_reaches_the_connector(
    app: FastAPI, client: httpx.AsyncClient, connector: tuple[RecordingConnector, str]
) -> None:
    recording, url = connector
    org, _ = await _tenant(app, url)
    before = await _quiet(recording, at_least=1)  # the new tenant's own converge
    sent = await _flood(client, org, [None, "guessed-client-state"], seconds=INTERVAL_S * 6)
    await asyncio.sleep(INTERVAL_S * 2)
    assert len(recording.times) == before
    assert _ignored(app, "unknown_subscription_wrong_client_state") == sent
    assert _ignored(app, "unknown_subscription") == 0


async def test_authentic_unknown_subscriptions_converge_at_most_once_per_interval(
    app: FastAPI, client: httpx.AsyncClient, connector: tuple[RecordingConnector, str]
) -> None:
    recording, url = connector
    org, state = await _tenant(app, url)
    before = await _quiet(recording, at_least=1)
    flood_s = INTERVAL_S * 6
    started = time.monotonic()
    sent = await _flood(client, org, [state], seconds=flood_s)
    settled = await _quiet(recording, at_least=before + 1)
    reacted = recording.times[before:settled]
    assert reacted, "an authentic unknown subscription converges the tenant"
    assert all(at >= started for at in reacted)
    # Consecutive converges start at least the interval apart. They are seen here when their
    # call arrives, which a loaded machine delays by a varying part of the interval, so the gaps
    # seen are allowed to fall short of it by that much; without the bound they would be a few
    # timer ticks (50 ms) apart.
    gaps = [later - earlier for earlier, later in itertools.pairwise(reacted)]
    assert all(gap >= INTERVAL_S * 0.6 for gap in gaps), gaps
    assert len(reacted) <= flood_s / INTERVAL_S + 2
    assert len(reacted) < sent
    assert _ignored(app, "unknown_subscription") == sent
