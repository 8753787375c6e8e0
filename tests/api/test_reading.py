"""The availability endpoints behind the reader dependency, end to end through the app:
a room linked here, its cache filled through the store's replace operation, read back with
the tenant's read token."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
from fastapi import FastAPI

from bookingcache.bootstrap import Container
from bookingcache.clock import FixedClock
from bookingcache.domain.events import BasicEvent
from tests.support.api import tenant_body
from tests.support.auth import ADMIN
from tests.support.problems import assert_problem


async def test_read_token_reads_availability_of_its_own_tenant_only(
    app: FastAPI, client: httpx.AsyncClient, tenant: dict[str, Any], clock: FixedClock
) -> None:
    tenant_id = tenant["id"]
    room = {"mailbox": "room.1@contoso.com", "name": "Ada", "building": "HQ", "floor": "1"}
    response = await client.put(f"/v1/tenants/{tenant_id}/rooms/r1", json=room, headers=ADMIN)
    assert response.status_code == 201
    now = clock.now()
    container: Container = app.state.services
    await container.store.replace_window(
        tenant_id,
        "room.1@contoso.com",
        window_start=now - dt.timedelta(hours=1),
        window_end=now + dt.timedelta(days=1),
        events=[
            BasicEvent(
                id="e1", start=now - dt.timedelta(minutes=30), end=now + dt.timedelta(minutes=30)
            )
        ],
        synced_at=now,
    )
    read = {"Authorization": f"Bearer {tenant['secrets']['read_token']}"}
    url = f"/v1/tenants/{tenant_id}/rooms/r1/availability"
    response = await client.get(url, headers=read)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "busy"

    other = await client.post("/v1/tenants", json=tenant_body(tenant_id + "-x"), headers=ADMIN)
    other_read = {"Authorization": f"Bearer {other.json()['secrets']['read_token']}"}
    assert_problem(await client.get(url, headers=other_read), 403)
    assert_problem(await client.get(url), 401)
    assert_problem(await client.get(f"/v1/tenants/{tenant_id}/rooms", headers=read), 403)
