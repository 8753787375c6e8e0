"""The change stream's tests: the real app served by the service's own server configuration on a
loopback port, in the test's event loop, so that writes through the app's store reach its
hub as they would from the embedded worker; a tenant with rooms on two floors."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from bookingcache.api.server import server_config
from bookingcache.bootstrap import service_app
from bookingcache.clock import FixedClock
from bookingcache.domain.tenancy import Room
from bookingcache.read.stream import StreamHub
from bookingcache.settings import Settings
from bookingcache.store.port import Store
from tests.support.auth import ADMIN
from tests.support.availability import NOW, Tenant, event
from tests.support.servers import bound_socket


@pytest.fixture
def clock_start() -> dt.datetime:
    return NOW


@pytest.fixture
def stream_settings(settings: Settings) -> Settings:
    """The settings the served app runs with (a test may override this fixture)."""
    return settings.model_copy(update={"change_feed_poll_ms": 50, "stream_heartbeat_s": 0.5})


@pytest.fixture
def server_socket() -> socket.socket:
    """The listening socket the app is served on (a test may override this fixture)."""
    return bound_socket()


@pytest.fixture
async def served(
    stream_settings: Settings, clock: FixedClock, server_socket: socket.socket
) -> AsyncIterator[tuple[FastAPI, str]]:
    """The service app and its base URL, served on loopback from the test's own loop."""
    app = service_app(stream_settings, clock=clock)
    sock = server_socket
    config = server_config(app, stream_settings, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield app, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)
        sock.close()


@pytest.fixture
async def http(served: tuple[FastAPI, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served[1], timeout=10) as client:
        yield client


@pytest.fixture
def hub(served: tuple[FastAPI, str]) -> StreamHub:
    hub: StreamHub = served[0].state.services.stream_hub
    return hub


class StreamTenant(Tenant):
    """The availability tests' tenant, with its change stream."""

    @property
    def url(self) -> str:
        return f"{self.base}/stream"

    async def ticket(self) -> str:
        response = await self.client.post(f"{self.url}/tickets", headers=self.reader)
        assert response.status_code == 201, response.text
        ticket: str = response.json()["ticket"]
        return ticket

    async def book(
        self, mailbox: str, title: str, start: str = "08:30", end: str = "10:30"
    ) -> None:
        """Give the room one meeting (a change of its displayed state)."""
        await self.sync(mailbox, [event(f"{mailbox}-{title}", start, end, title=title)])


async def make_tenant(
    http: httpx.AsyncClient, store: Store, clock: FixedClock, *, rooms: dict[str, tuple[str, str]]
) -> StreamTenant:
    """A tenant with ``rooms`` (id -> (building, floor)), each synced with one meeting two
    days ahead (so none today, and the change feed is not empty)."""
    tenant_id = f"t-{uuid.uuid4().hex[:12]}"
    body: dict[str, Any] = {
        "id": tenant_id,
        "name": "Contoso",
        "event_source": "push",
        "default_time_zone": "Europe/Berlin",
        "title_policy": "show",
    }
    response = await http.post("/v1/tenants", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    tenant = StreamTenant(tenant_id, response.json()["secrets"]["read_token"], http, store, clock)
    await store.import_rooms(
        tenant_id,
        [
            Room(
                tenant_id,
                room_id,
                f"{room_id}@contoso.example",
                room_id.upper(),
                building,
                floor,
                capacity=8 if room_id == "r1" else None,
            )
            for room_id, (building, floor) in rooms.items()
        ],
    )
    for room_id in rooms:
        later = event(f"{room_id}-later", "2026-11-25T09:00:00+00:00", "2026-11-25T10:00:00+00:00")
        await tenant.sync(f"{room_id}@contoso.example", [later])
    return tenant


@pytest.fixture
async def tenant(
    served: tuple[FastAPI, str], http: httpx.AsyncClient, clock: FixedClock
) -> StreamTenant:
    store: Store = served[0].state.services.store
    return await make_tenant(
        http,
        store,
        clock,
        rooms={"r1": ("HQ", "1"), "r2": ("HQ", "1"), "r3": ("HQ", "2"), "r4": ("Annex", "1")},
    )
