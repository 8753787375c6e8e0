"""The real app over ``httpx.ASGITransport`` on every engine, and a tenant whose cache the
tests fill through the store's ``replace_window`` as a sync would (tests/support/availability.py
has the helpers)."""

from __future__ import annotations

import datetime as dt
import uuid

import httpx
import pytest
from fastapi import FastAPI

from bookingcache.clock import FixedClock
from bookingcache.store.port import Store
from tests.support.auth import ADMIN
from tests.support.availability import NOW, Tenant


@pytest.fixture
def clock_start() -> dt.datetime:
    return NOW


@pytest.fixture
def app_store(app: FastAPI) -> Store:
    """The running app's own store: writes through it reach the app's read model in-process."""
    store: Store = app.state.services.store
    return store


@pytest.fixture
async def tenant(client: httpx.AsyncClient, app_store: Store, clock: FixedClock) -> Tenant:
    """A tenant (Berlin, title policy hide_private, staleness bound one hour) with no rooms."""
    tenant_id = f"t-{uuid.uuid4().hex[:12]}"
    response = await client.post(
        "/v1/tenants",
        json={
            "id": tenant_id,
            "name": "Contoso",
            "event_source": "push",
            "default_time_zone": "Europe/Berlin",
            "staleness_bound_s": 3600,
        },
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    secrets = response.json()["secrets"]
    return Tenant(tenant_id, secrets["read_token"], client, app_store, clock)
