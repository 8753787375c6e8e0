"""Per app + mailbox throttling: 4 concurrent requests, N per window, 429 with Retry-After and
the sample body; the counters the control API reports."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from graph_emulator.config import EmulatorConfig

WINDOW = {"startDateTime": "2026-03-16T00:00:00Z", "endDateTime": "2026-03-23T00:00:00Z"}


async def test_more_than_four_concurrent_requests_are_throttled(
    tenant_factory: Any, graph_factory: Any, load_sample: Any
) -> None:
    tenant = tenant_factory(EmulatorConfig(mailbox_latency_s=0.2))
    async with graph_factory(tenant) as graph:
        path = f"/v1.0/users/{tenant.room.id}/calendarView"
        responses = await asyncio.gather(*(graph.http.get(path, params=WINDOW) for _ in range(7)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] * 4 + [429] * 3
        throttled = next(r for r in responses if r.status_code == 429)
        assert int(throttled.headers["Retry-After"]) >= 1
        sample = load_sample("error-throttled.json")
        assert throttled.json()["error"]["code"] == sample["error"]["code"]
        assert throttled.json()["error"]["message"] == sample["error"]["message"]
        assert set(throttled.json()["error"]) == set(sample["error"])

        # Another mailbox, and another app on the same mailbox, have their own budgets.
        other = [
            graph.http.get(f"/v1.0/users/{tenant.tentative_room.id}/calendarView", params=WINDOW)
            for _ in range(4)
        ]
        assert {r.status_code for r in await asyncio.gather(*other)} == {200}

    counters = tenant.state.counters.snapshot()
    assert counters["requests_per_mailbox"][tenant.room.id] == 7
    assert counters["throttled_per_mailbox"] == {tenant.room.id: 3}
    assert counters["throttled"] == 3
    assert counters["max_concurrency_per_mailbox"][tenant.room.id] == 4
    assert counters["max_concurrency_per_mailbox"][tenant.tentative_room.id] == 4


async def test_request_budget_per_window(tenant_factory: Any, graph_factory: Any) -> None:
    tenant = tenant_factory(EmulatorConfig(mailbox_request_limit=5, mailbox_request_window_s=600))
    async with graph_factory(tenant) as graph:
        path = f"/v1.0/users/{tenant.room.id}/calendarView"
        statuses = [(await graph.http.get(path, params=WINDOW)).status_code for _ in range(7)]
        assert statuses == [200] * 5 + [429] * 2
        assert tenant.state.counters.named["mailbox_requests_peak"] == 7
        limited = await graph.http.get(path, params=WINDOW)
        assert limited.json()["error"]["code"] == "ApplicationThrottled"
        assert 1 <= int(limited.headers["Retry-After"]) <= 600
        tenant.state.clock.advance(dt.timedelta(seconds=601))
        await graph.as_app("full")
        assert (await graph.http.get(path, params=WINDOW)).status_code == 200


async def test_global_budget_per_app(tenant_factory: Any, graph_factory: Any) -> None:
    # Graph's global limit per app (130,000 requests per 10 s), set low: it counts every Graph
    # request of the app on any mailbox, and each $batch member (not the envelope).
    tenant = tenant_factory(EmulatorConfig(app_request_limit=6, app_request_window_s=10))
    async with graph_factory(tenant) as graph:
        rooms = [tenant.room, tenant.tentative_room]
        paths = [f"/v1.0/users/{r.id}/calendarView" for r in rooms]
        statuses = [(await graph.http.get(p, params=WINDOW)).status_code for p in paths * 2]
        assert statuses == [200] * 4
        query = "?startDateTime=2026-03-16T00:00:00Z&endDateTime=2026-03-23T00:00:00Z"
        batch = await graph.http.post(
            "/v1.0/$batch",
            json={
                "requests": [
                    {"id": str(n), "method": "GET", "url": paths[n % 2][5:] + query}
                    for n in range(3)
                ]
            },
        )
        assert batch.status_code == 200
        members = sorted(r["status"] for r in batch.json()["responses"])
        assert members == [200, 200, 429]
        limited = await graph.http.get(paths[0], params=WINDOW)
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "TooManyRequests"
        assert 1 <= int(limited.headers["Retry-After"]) <= 10
        assert tenant.state.counters.named["app_throttled"] == 2
        # Throttled requests count against the window too: 8 were in it at the end.
        assert tenant.state.counters.named["app_requests_peak"] == 8
        # Another app has its own budget.
        await graph.as_app("readbasic")
        assert (await graph.http.get(paths[0], params=WINDOW)).status_code == 200
        # Requests and throttled requests per app (by client id), $batch members one each.
        apps = tenant.apps
        counters = tenant.state.counters.snapshot()
        assert counters["requests_per_app"] == {
            apps["full"].client_id: 8,
            apps["readbasic"].client_id: 1,
        }
        assert counters["throttled_per_app"] == {apps["full"].client_id: 2}
        tenant.state.clock.advance(dt.timedelta(seconds=11))
        await graph.as_app("full")
        assert (await graph.http.get(paths[0], params=WINDOW)).status_code == 200
