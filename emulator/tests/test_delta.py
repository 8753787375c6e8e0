"""calendarView/delta: paged first round, changes and @removed entries later, the window baked
into the token, and 410 SyncStateNotFound for expired or invalidated tokens."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from graph_emulator.config import EmulatorConfig

WINDOW = {"startDateTime": "2026-03-16T00:00:00Z", "endDateTime": "2026-03-23T00:00:00Z"}


async def full_round(
    graph: Any, url: str, params: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], str, int]:
    values: list[dict[str, Any]] = []
    pages = 0
    next_url: str | None = url
    while next_url:
        response = await graph.http.get(
            next_url, params=params, headers={"Prefer": "odata.maxpagesize=4"}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        values += body["value"]
        pages += 1
        params = None
        next_url = body.get("@odata.nextLink")
        if next_url:
            assert "$skiptoken=" in next_url
            assert "@odata.deltaLink" not in body
        else:
            delta_link = body["@odata.deltaLink"]
    assert "$deltatoken=" in delta_link
    return values, delta_link, pages


def book(tenant: Any, day: int, hour: int) -> Any:
    return tenant.book(
        tenant.room, f"2026-03-{day:02d}T{hour:02d}:00:00", f"2026-03-{day:02d}T{hour:02d}:30:00"
    )


async def test_rounds_return_changes_and_removals(
    tenant: Any, graph: Any, load_sample: Any
) -> None:
    created = [book(tenant, 17, h) for h in range(8, 17)]
    path = f"/v1.0/users/{tenant.room.upn}/calendarView/delta"
    values, delta_link, pages = await full_round(graph, path, WINDOW)
    assert pages == 3
    assert {v["id"] for v in values} == {c["id"] for c in created}
    sample = load_sample("calendarview-delta-last.json")
    assert set(values[0]) >= set(sample["value"][0])
    assert values[0]["@odata.type"] == "#microsoft.graph.event"

    # Nothing changed: an empty page and a fresh delta link.
    same, delta_link, _ = await full_round(graph, delta_link)
    assert same == []

    calendars = tenant.state.calendars
    calendars.delete_event(tenant.room.id, created[0]["id"])
    calendars.update_event(tenant.room.id, created[1]["id"], {"subject": "moved"})
    added = book(tenant, 18, 9)
    outside = book(tenant, 25, 9)  # after the token's window
    changes, delta_link, _ = await full_round(graph, delta_link)
    removed = [v for v in changes if "@removed" in v]
    assert removed == [
        {
            "@odata.type": "#microsoft.graph.event",
            "id": created[0]["id"],
            "@removed": {"reason": "deleted"},
        }
    ]
    assert set(removed[0]) == set(sample["value"][1]) | {"@odata.type"}
    changed = {v["id"] for v in changes if "@removed" not in v}
    assert changed == {created[1]["id"], added["id"]}
    assert outside["id"] not in changed


async def test_window_is_baked_into_the_token(tenant: Any, graph: Any) -> None:
    book(tenant, 17, 9)
    path = f"/v1.0/users/{tenant.room.id}/calendarView/delta"
    _, delta_link, _ = await full_round(graph, path, WINDOW)
    token = parse_qs(urlsplit(delta_link).query)["$deltatoken"][0]
    book(tenant, 30, 9)
    response = await graph.http.get(
        path,
        params={
            "$deltatoken": token,
            "startDateTime": "2026-03-01T00:00:00Z",
            "endDateTime": "2026-04-30T00:00:00Z",
        },
    )
    assert response.json()["value"] == []


@pytest.mark.parametrize("report_cancelled", [False, True])
async def test_series_master_bare_occurrences_and_cancellation(
    tenant_factory: Any, graph_factory: Any, report_cancelled: bool
) -> None:
    tenant = tenant_factory(EmulatorConfig(delta_reports_cancelled_occurrences=report_cancelled))
    master = tenant.book(
        tenant.room,
        "2026-03-16T10:00:00",
        "2026-03-16T10:30:00",
        recurrence={
            "pattern": {"type": "daily", "interval": 1},
            "range": {"type": "numbered", "startDate": "2026-03-16", "numberOfOccurrences": 3},
        },
    )
    path = f"/v1.0/users/{tenant.room.id}/calendarView/delta"
    async with graph_factory(tenant) as graph:
        first, delta_link, _ = await full_round(graph, path, WINDOW)
        # The master in full, then its occurrences bare, as Graph sends them.
        assert [v["type"] for v in first] == ["seriesMaster"] + ["occurrence"] * 3
        assert first[0]["id"] == master["id"]
        assert first[0]["subject"] == "Kari Nordmann"
        assert set(first[1]) == {
            "@odata.type",
            "@odata.etag",
            "id",
            "seriesMasterId",
            "type",
            "start",
            "end",
        }
        tenant.state.calendars.cancel_occurrence(
            tenant.room.id, master["id"], dt.datetime(2026, 3, 17, 9, 0, tzinfo=dt.UTC)
        )
        changes, _, _ = await full_round(graph, delta_link)
    removed = [v["id"] for v in changes if "@removed" in v]
    assert removed == ([first[2]["id"]] if report_cancelled else [])
    changed = [v["id"] for v in changes if "@removed" not in v]
    assert changed == [master["id"], first[1]["id"], first[3]["id"]]


async def test_a_long_series_stays_on_one_page(tenant: Any, graph: Any) -> None:
    tenant.book(
        tenant.room,
        "2026-03-16T07:00:00",
        "2026-03-16T07:30:00",
        recurrence={
            "pattern": {"type": "daily", "interval": 1},
            "range": {"type": "numbered", "startDate": "2026-03-16", "numberOfOccurrences": 7},
        },
    )
    book(tenant, 17, 9)
    path = f"/v1.0/users/{tenant.room.id}/calendarView/delta"
    response = await graph.http.get(path, params=WINDOW, headers={"Prefer": "odata.maxpagesize=4"})
    assert len(response.json()["value"]) == 8
    assert "@odata.nextLink" in response.json()


async def test_expired_and_invalidated_tokens_answer_410(
    tenant: Any, graph: Any, load_sample: Any
) -> None:
    book(tenant, 17, 9)
    path = f"/v1.0/users/{tenant.room.id}/calendarView/delta"
    _, delta_link, _ = await full_round(graph, path, WINDOW)
    tenant.state.clock.advance(dt.timedelta(seconds=tenant.state.config.delta_token_lifetime_s + 1))
    await graph.as_app("full")  # the old access token has expired too
    expired = await graph.http.get(delta_link)
    assert expired.status_code == 410
    sample = load_sample("error-sync-state-not-found.json")
    assert expired.json()["error"]["code"] == sample["error"]["code"]
    assert expired.json()["error"]["message"] == sample["error"]["message"]

    _, delta_link, _ = await full_round(graph, path, WINDOW)
    assert tenant.state.delta.expire(mailbox_id=tenant.room.id) >= 1
    assert (await graph.http.get(delta_link)).status_code == 410
    forged = await graph.http.get(path, params={"$deltatoken": "bm90LWEtdG9rZW4"})
    assert forged.status_code == 410


async def test_delta_needs_calendars_read_and_a_window(tenant: Any, graph: Any) -> None:
    path = f"/v1.0/users/{tenant.room.id}/calendarView/delta"
    no_window = await graph.http.get(path)
    assert no_window.status_code == 400
    assert no_window.json()["error"]["code"] == "ErrorInvalidParameter"
    await graph.as_app("readbasic")
    denied = await graph.http.get(path, params=WINDOW)
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "ErrorAccessDenied"
