"""JSON batching: limits, per-member answers, dependsOn with 424, Outlook's 4 in parallel and
member-level 429."""

from __future__ import annotations

from typing import Any

import pytest

from graph_emulator.config import EmulatorConfig

WINDOW = "startDateTime=2026-03-16T00:00:00Z&endDateTime=2026-03-23T00:00:00Z"


def view(tenant: Any, n: int, mailbox: Any = None, **extra: Any) -> dict[str, Any]:
    mailbox = mailbox or tenant.room
    return {
        "id": str(n),
        "method": "GET",
        "url": f"/users/{mailbox.upn}/calendarView?{WINDOW}",
    } | extra


async def test_members_answer_individually(tenant: Any, graph: Any) -> None:
    tenant.book(tenant.room, "2026-03-17T09:00:00", "2026-03-17T10:00:00")
    response = await graph.http.post(
        "/v1.0/$batch",
        json={
            "requests": [
                view(tenant, 1),
                {"id": "2", "method": "GET", "url": "users/ghost@contoso.example/events"},
                {
                    "id": "3",
                    "method": "POST",
                    "url": f"/users/{tenant.person.upn}/events",
                    "headers": {"Content-Type": "application/json"},
                    "body": {
                        "subject": "via batch",
                        "start": tenant.when("2026-03-18T09:00:00"),
                        "end": tenant.when("2026-03-18T10:00:00"),
                    },
                },
                {"id": "4", "method": "GET", "url": f"/users/{tenant.room.upn}/calendarView"},
            ]
        },
    )
    assert response.status_code == 200
    answers = {r["id"]: r for r in response.json()["responses"]}
    assert answers["1"]["status"] == 200
    assert len(answers["1"]["body"]["value"]) == 1
    assert answers["1"]["headers"]["Content-Type"] == "application/json"
    assert answers["2"]["status"] == 404
    assert answers["2"]["body"]["error"]["code"] == "ErrorInvalidUser"
    assert answers["3"]["status"] == 201
    assert answers["3"]["body"]["subject"] == "via batch"
    assert answers["4"]["status"] == 400


async def test_depends_on_runs_in_order_and_fails_with_424(tenant: Any, graph: Any) -> None:
    response = await graph.http.post(
        "/v1.0/$batch",
        json={
            "requests": [
                {"id": "a", "method": "GET", "url": "/users/ghost@contoso.example/calendar"},
                view(tenant, 2, dependsOn=["a"]),
                view(tenant, 3),
                view(tenant, 4, dependsOn=["3"]),
            ]
        },
    )
    answers = {r["id"]: r for r in response.json()["responses"]}
    assert answers["a"]["status"] == 404
    assert answers["2"]["status"] == 424
    assert answers["3"]["status"] == 200
    assert answers["4"]["status"] == 200


@pytest.mark.parametrize(
    ("requests", "why"),
    [
        ([{"id": str(n), "method": "GET", "url": "/users/x"} for n in range(21)], "21 requests"),
        ([{"id": "1", "method": "GET", "url": "/a"}, {"id": "1", "method": "GET", "url": "/b"}],
         "duplicate ids"),
        ([{"id": "1", "method": "GET", "url": "/a", "dependsOn": ["9"]}], "unknown dependency"),
        ([{"id": "1", "method": "GET", "url": "/a", "dependsOn": ["2"]},
          {"id": "2", "method": "GET", "url": "/b", "dependsOn": ["1"]}], "cycle"),
        ([], "empty"),
    ],
)  # fmt: skip
async def test_malformed_batches_are_400(graph: Any, requests: list[Any], why: str) -> None:
    response = await graph.http.post("/v1.0/$batch", json={"requests": requests})
    assert response.status_code == 400, why
    assert response.json()["error"]["code"] == "BadRequest"


async def test_at_most_four_members_run_at_once(tenant_factory: Any, graph_factory: Any) -> None:
    tenant = tenant_factory(EmulatorConfig(mailbox_latency_s=0.05))
    async with graph_factory(tenant) as graph:
        response = await graph.http.post(
            "/v1.0/$batch", json={"requests": [view(tenant, n) for n in range(12)]}
        )
    statuses = [r["status"] for r in response.json()["responses"]]
    # Outlook's batch parallelism never exceeds the mailbox concurrency limit.
    assert statuses == [200] * 12
    assert tenant.state.counters.max_concurrency_per_mailbox[tenant.room.id] == 4


async def test_members_are_throttled_individually(tenant_factory: Any, graph_factory: Any) -> None:
    tenant = tenant_factory(EmulatorConfig(mailbox_request_limit=3))
    async with graph_factory(tenant) as graph:
        response = await graph.http.post(
            "/v1.0/$batch",
            json={
                "requests": [
                    view(tenant, n, dependsOn=[str(n - 1)] if n else None) for n in range(5)
                ]
                + [view(tenant, 9, mailbox=tenant.tentative_room)]
            },
        )
    answers = {r["id"]: r for r in response.json()["responses"]}
    assert [answers[str(n)]["status"] for n in range(3)] == [200, 200, 200]
    assert answers["3"]["status"] == 429
    assert "Retry-After" in answers["3"]["headers"]
    assert answers["4"]["status"] == 424
    assert answers["9"]["status"] == 200
