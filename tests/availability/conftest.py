"""The real app over ``httpx.ASGITransport`` on every engine, a tenant with rooms, and helpers
that fill the cache through the store's ``replace_window`` as a sync would."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bookingcache.clock import FixedClock
from bookingcache.domain.events import BasicEvent, EventType, Sensitivity, ShowAs
from bookingcache.store.port import Store

ADMIN_TOKEN = "admin-token-for-the-availability-tests-42"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# Monday 23 November 2026, 09:00 UTC = 10:00 in Berlin (UTC+1 in winter).
NOW = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
UTC = dt.UTC
SAMPLES = Path(__file__).resolve().parents[2] / "testdata" / "graph-samples"


def at(text: str) -> dt.datetime:
    """``"09:30"`` on the test day, or a full ISO 8601 instant, as aware UTC."""
    if len(text) == 5:
        hours, minutes = text.split(":")
        return NOW.replace(hour=int(hours), minute=int(minutes))
    return dt.datetime.fromisoformat(text).astimezone(UTC)


def z(instant: dt.datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event(
    event_id: str,
    start: str,
    end: str,
    *,
    show_as: ShowAs = ShowAs.BUSY,
    title: str | None = "Planning",
    sensitivity: Sensitivity = Sensitivity.NORMAL,
    all_day: bool = False,
    cancelled: bool = False,
    type: EventType = EventType.SINGLE_INSTANCE,
) -> BasicEvent:
    return BasicEvent(
        id=event_id,
        start=at(start),
        end=at(end),
        is_all_day=all_day,
        show_as=show_as,
        is_cancelled=cancelled,
        title=title,
        sensitivity=sensitivity,
        type=type,
    )


def load_sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SAMPLES / name).read_text(encoding="utf-8"))
    return loaded


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def admin_token() -> str:
    return ADMIN_TOKEN


@pytest.fixture
def app_store(app: FastAPI) -> Store:
    """The running app's own store: writes through it reach the app's read model in-process."""
    store: Store = app.state.container.store
    return store


@dataclass
class Tenant:
    id: str
    read_token: str
    client: httpx.AsyncClient
    store: Store
    clock: FixedClock

    @property
    def reader(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.read_token}"}

    @property
    def base(self) -> str:
        return f"/v1/tenants/{self.id}"

    async def put_room(
        self,
        room_id: str,
        mailbox: str,
        *,
        name: str | None = None,
        building: str | None = "HQ",
        floor: str | None = "1",
        time_zone: str | None = None,
    ) -> None:
        body: dict[str, Any] = {"mailbox": mailbox, "name": name or room_id.upper()}
        if building is not None:
            body["building"] = building
        if floor is not None:
            body["floor"] = floor
        if time_zone is not None:
            body["time_zone"] = time_zone
        response = await self.client.put(f"{self.base}/rooms/{room_id}", json=body, headers=ADMIN)
        assert response.status_code in (200, 201), response.text

    async def sync(
        self, mailbox: str, events: Sequence[BasicEvent], *, synced_at: dt.datetime | None = None
    ) -> None:
        """Replace the mailbox's cached events for the test week, as a refresh would."""
        await self.store.replace_window(
            self.id,
            mailbox,
            window_start=NOW - dt.timedelta(days=3),
            window_end=NOW + dt.timedelta(days=10),
            events=events,
            synced_at=synced_at or self.clock.now(),
        )

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(f"{self.base}{path}", params=params, headers=self.reader)

    async def post(self, path: str, body: Any, **headers: str) -> httpx.Response:
        return await self.client.post(
            f"{self.base}{path}", json=body, headers={**self.reader, **headers}
        )


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


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:bookingcache:problem:")
    return body
