from __future__ import annotations

import asyncio
import contextlib
import sqlite3

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from bookingcache.bootstrap import service_app
from bookingcache.settings import Settings
from tests.support.auth import ADMIN
from tests.support.problems import assert_problem


async def test_liveness_and_readiness(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


async def test_not_ready_before_start_up(settings: Settings) -> None:
    app = service_app(settings)  # lifespan not run: no database yet
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/healthz")).status_code == 200
        assert_problem(await client.get("/readyz"), 503)


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of the first sample called ``name`` whose labels include ``labels``."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return 0.0


async def test_metrics_count_requests_by_route_template(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    for tenant in ("aaa", "bbb", "ccc"):
        await client.get(f"/v1/tenants/{tenant}", headers=ADMIN)
    await client.get("/nowhere")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    total = "bookingcache_http_requests_total"
    assert _sample(text, total, route="/v1/tenants/{tenant}", status="404", method="GET") == 3
    assert _sample(text, total, route="<unmatched>", status="404") == 1
    assert "/v1/tenants/aaa" not in text
    count = "bookingcache_http_request_duration_seconds_count"
    assert _sample(text, count, route="/v1/tenants/{tenant}") == 3


async def test_each_app_has_its_own_registry(settings: Settings, client: httpx.AsyncClient) -> None:
    other = service_app(settings)
    transport = httpx.ASGITransport(app=other)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as other_client:
        await other_client.get("/healthz")
        await other_client.get("/healthz")
        other_metrics = (await other_client.get("/metrics")).text
    await client.get("/healthz")
    mine = (await client.get("/metrics")).text
    total = "bookingcache_http_requests_total"
    assert _sample(other_metrics, total, route="/healthz") == 2
    assert _sample(mine, total, route="/healthz") == 1


async def test_not_ready_when_the_schema_is_behind(
    client: httpx.AsyncClient, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("rewinds the schema version through the SQLite file")
    path = database_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE alembic_version SET version_num = '0005'")
    body = assert_problem(await client.get("/readyz"), 503)
    assert "migration" in body["detail"]
    assert (await client.get("/healthz")).status_code == 200


async def test_the_sync_engines_metrics_are_in_the_apps_registry(
    client: httpx.AsyncClient,
) -> None:
    text = (await client.get("/metrics")).text
    assert "# TYPE bookingcache_sync_refreshes_total counter" in text
    assert "# TYPE bookingcache_sync_refresh_duration_seconds histogram" in text
    samples = dict(line.split(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert float(samples["bookingcache_sync_queue_depth"]) == 0
    assert float(samples["bookingcache_sync_refreshes_running"]) == 0


async def test_on_postgresql_the_listening_connection_is_in_the_metrics(
    client: httpx.AsyncClient, database_url: str
) -> None:
    """The read model listens for other processes' refreshes; an operator sees whether it
    does, or has fallen back to polling."""
    text = (await client.get("/metrics")).text
    if database_url.startswith("sqlite"):
        assert "bookingcache_store_notices_listening" not in text
        return
    deadline = asyncio.get_running_loop().time() + 10
    while _sample(text, "bookingcache_store_notices_listening") != 1:
        assert asyncio.get_running_loop().time() < deadline, text
        await asyncio.sleep(0.05)
        text = (await client.get("/metrics")).text
    assert _sample(text, "bookingcache_store_notices_connections_total") >= 1
