from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
import pytest

from bookingcache.clock import FixedClock

ADMIN_TOKEN = "admin-token-for-the-api-tests-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC))


@pytest.fixture
def admin_token() -> str:
    return ADMIN_TOKEN


@pytest.fixture
def tenant_id() -> str:
    # Unique per test: a PostgreSQL database may be shared by the tests of one run.
    return f"t-{uuid.uuid4().hex[:12]}"


def tenant_body(tenant_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": tenant_id,
        "name": "Contoso",
        "event_source": "connector",
        "connector_url": "https://connector.contoso.example",
        "default_time_zone": "Europe/Berlin",
    }
    body.update(overrides)
    return body


@pytest.fixture
async def tenant(client: httpx.AsyncClient, tenant_id: str) -> dict[str, Any]:
    """A created tenant, with its one-time secrets."""
    response = await client.post("/v1/tenants", json=tenant_body(tenant_id), headers=ADMIN)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:bookingcache:problem:")
    assert body["title"]
    return body
