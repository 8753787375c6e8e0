"""The single-room read's way around the routing (``api/fast_reads.py``) answers exactly as the
documented route does: the same status, body and headers, the same metrics; every request it
does not take goes the full way, and a refused token is counted once."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bookingcache.api.fast_reads import RoomAvailabilityRead
from bookingcache.settings import Settings
from tests.support.auth import ADMIN
from tests.support.availability import Tenant, event

pytestmark = pytest.mark.pinned_dates

MAP = "https://map.example"


@pytest.fixture(params=["no-cors", "cors"])
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """The app with and without a CORS policy (whose headers the fast path must add too)."""
    origins = [MAP] if request.param == "cors" else []
    return settings.model_copy(update={"cors_origins": origins})


class Counting:
    """The app's fast path, counting the requests it answered."""

    def __init__(self, fast: RoomAvailabilityRead) -> None:
        self.fast = fast
        self.answered = 0

    async def __call__(self, *args: Any) -> bool:
        answered = await self.fast(*args)
        self.answered += answered
        return answered


@pytest.fixture
def counting(app: FastAPI) -> Counting:
    fast = app.room_availability_read  # type: ignore[attr-defined]
    assert isinstance(fast, RoomAvailabilityRead)
    counting = Counting(fast)
    app.room_availability_read = counting  # type: ignore[attr-defined]
    return counting


def _shape(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    headers = [
        (name, "<id>" if name == "x-request-id" else value)
        for name, value in response.headers.multi_items()
    ]
    return response.status_code, response.content, headers


async def both_ways(
    app: FastAPI, counting: Counting, client: httpx.AsyncClient, url: str, headers: dict[str, str]
) -> tuple[httpx.Response, bool]:
    """The answer with the fast path and without it, held to be the same; (the answer, whether
    the fast path took it)."""
    before = counting.answered
    fast = await client.get(url, headers=headers)
    taken = counting.answered > before
    app.room_availability_read = None  # type: ignore[attr-defined]
    try:
        full = await client.get(url, headers=headers)
    finally:
        app.room_availability_read = counting  # type: ignore[attr-defined]
    assert _shape(fast) == _shape(full), url
    return fast, taken


async def test_the_usual_reads_are_answered_as_the_route_answers(
    app: FastAPI, counting: Counting, tenant: Tenant
) -> None:
    await tenant.put_room("a1", "a1@contoso.example")
    await tenant.put_room("a2", "a2@contoso.example")
    await tenant.sync("a1@contoso.example", [event("m1", "08:30", "09:30")])
    url = f"{tenant.base}/rooms/a1/availability"
    cases = [
        (url, tenant.reader),
        (url, ADMIN),
        (url + "?min_free_minutes=45", tenant.reader),
        (url + "?min_free_minutes=1440", tenant.reader),
        (url, {**tenant.reader, "X-Request-ID": "lobby-7"}),
        (url, {**tenant.reader, "Origin": MAP}),
        (url, {**tenant.reader, "Origin": "https://elsewhere.example"}),
        (f"{tenant.base}/rooms/a2/availability", tenant.reader),  # never synced: unknown
    ]
    for case_url, headers in cases:
        response, taken = await both_ways(app, counting, tenant.client, case_url, headers)
        assert response.status_code == 200, response.text
        assert taken, case_url
    tagged = await tenant.client.get(url, headers={**tenant.reader, "X-Request-ID": "lobby-7"})
    assert tagged.headers["x-request-id"] == "lobby-7"
    assert tagged.headers["cache-control"] == "no-store"
    assert tagged.headers["content-security-policy"]


async def test_everything_else_goes_the_full_way(
    app: FastAPI, counting: Counting, tenant: Tenant, client: httpx.AsyncClient
) -> None:
    await tenant.put_room("a1", "a1@contoso.example")
    await tenant.sync("a1@contoso.example", [])
    url = f"{tenant.base}/rooms/a1/availability"
    other = await client.post(
        "/v1/tenants",
        json={"id": f"{tenant.id}-o", "name": "Other", "event_source": "push"},
        headers=ADMIN,
    )
    foreign = {"Authorization": f"Bearer {other.json()['secrets']['read_token']}"}
    cases: list[tuple[str, dict[str, str], int]] = [
        (url, {}, 401),
        (url, {"Authorization": "Basic abc"}, 401),
        (url, {"Authorization": f"Bearer {tenant.id}.wrong"}, 401),
        (url, foreign, 403),
        (f"{tenant.base}/rooms/nowhere/availability", tenant.reader, 404),
        ("/v1/tenants/no-such-tenant/rooms/a1/availability", ADMIN, 404),
        ("/v1/tenants/Bad_Tenant/rooms/a1/availability", ADMIN, 422),
        (url + "?min_free_minutes=0", tenant.reader, 422),
        (url + "?min_free_minutes=1441", tenant.reader, 422),
        (url + "?min_free_minutes=015", tenant.reader, 200),
        (url + "?start=2026-11-23T08:00:00Z", tenant.reader, 200),
        (url + "?min_free_minutes=30&min_free_minutes=40", tenant.reader, 422),
        (url, {**tenant.reader, "Content-Length": "0"}, 200),
    ]
    for case_url, headers, status in cases:
        response, taken = await both_ways(app, counting, client, case_url, headers)
        assert response.status_code == status, (case_url, response.text)
        assert not taken, case_url
    assert counting.answered == 0


async def test_a_refused_token_is_counted_once(counting: Counting, tenant: Tenant) -> None:
    """20 failures a minute per client address (the default burst): the 21st is 429 whether or
    not the fast path looked at the token first."""
    await tenant.put_room("a1", "a1@contoso.example")
    url = f"{tenant.base}/rooms/a1/availability"
    wrong = {"Authorization": f"Bearer {tenant.id}.wrong"}
    statuses = [(await tenant.client.get(url, headers=wrong)).status_code for _ in range(21)]
    assert statuses == [401] * 20 + [429]
    assert counting.answered == 0


async def test_fast_answers_are_counted_under_the_routes_template(
    counting: Counting, tenant: Tenant
) -> None:
    await tenant.put_room("a1", "a1@contoso.example")
    for _ in range(3):
        response = await tenant.get("/rooms/a1/availability")
        assert response.status_code == 200
    assert counting.answered == 3
    metrics = (await tenant.client.get("/metrics")).text
    series = (
        'bookingcache_http_requests_total{method="GET",'
        'route="/v1/tenants/{tenant}/rooms/{room}/availability",status="200"} 3.0'
    )
    assert series in metrics
