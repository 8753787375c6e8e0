from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from bookingcache.bootstrap import service_app
from bookingcache.clock import FixedClock
from bookingcache.settings import Settings
from tests.support.auth import ADMIN

MAP = "https://map.example"


@pytest.fixture
async def cors_client(settings: Settings, clock: FixedClock) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = service_app(settings.model_copy(update={"cors_origins": [MAP]}), clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


async def test_configured_origin_may_call_from_a_browser(cors_client: httpx.AsyncClient) -> None:
    preflight = await cors_client.options(
        "/v1/tenants/contoso/availability",
        headers={
            "Origin": MAP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == MAP
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    response = await cors_client.get("/v1/tenants", headers={**ADMIN, "Origin": MAP})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == MAP
    assert "x-request-id" in response.headers["access-control-expose-headers"].lower()


async def test_other_origins_get_no_cors_grant(cors_client: httpx.AsyncClient) -> None:
    response = await cors_client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers


async def test_no_cors_unless_configured(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"Origin": MAP})
    assert "access-control-allow-origin" not in response.headers
