"""calendarView: shapes against the sample, paging, $select, $top, Prefer, all-day events and
Graph-style errors for bad parameters."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from graph_emulator.auth import App

SELECT = "id,subject,start,end,isAllDay,showAs,isCancelled,type,seriesMasterId,sensitivity"
WINDOW = {"startDateTime": "2026-03-16T00:00:00Z", "endDateTime": "2026-03-21T00:00:00Z"}


def book_day(tenant: Any, count: int) -> None:
    for n in range(count):
        hour = 8 + n // 2
        minute = 30 * (n % 2)
        tenant.book(
            tenant.room,
            f"2026-03-17T{hour:02d}:{minute:02d}:00",
            f"2026-03-17T{hour:02d}:{minute + 29:02d}:00",
        )


async def test_page_shape_matches_the_sample(tenant: Any, graph: Any, load_sample: Any) -> None:
    book_day(tenant, 7)
    response = await graph.http.get(
        f"/v1.0/users/{tenant.room.upn}/calendar/calendarView",
        params=WINDOW | {"$select": SELECT, "$top": "5"},
    )
    assert response.status_code == 200
    body = response.json()
    expected = load_sample("calendarview-page1.json")
    assert set(body) == set(expected)
    assert [set(v) for v in body["value"]] == [set(expected["value"][0])] * 5
    assert body["@odata.context"].endswith(
        "/$metadata#users('room-a1%40contoso.example')/calendar/calendarView(" + SELECT + ")"
    )
    first = body["value"][0]
    assert first["@odata.etag"].startswith('W/"')
    assert first["start"]["timeZone"] == "UTC"
    assert len(first["start"]["dateTime"]) == len(expected["value"][0]["start"]["dateTime"])
    # The room replaced the subject with the organizer's name.
    assert first["subject"] == "Kari Nordmann"
    query = parse_qs(urlsplit(body["@odata.nextLink"]).query)
    assert query["$top"] == ["5"]
    assert query["$skip"] == ["5"]
    assert query["$select"] == [SELECT]


async def test_default_page_is_ten_and_next_links_cover_everything(tenant: Any, graph: Any) -> None:
    book_day(tenant, 18)
    url: str | None = f"/v1.0/users/{tenant.room.id}/calendarView"
    params: dict[str, str] | None = WINDOW
    sizes, ids = [], []
    while url:
        response = await graph.http.get(url, params=params)
        body = response.json()
        sizes.append(len(body["value"]))
        ids += [v["id"] for v in body["value"]]
        url, params = body.get("@odata.nextLink"), None
    assert sizes == [10, 8]
    assert len(set(ids)) == 18


async def test_top_above_1000_pages_by_1000(tenant: Any, graph: Any) -> None:
    book_day(tenant, 3)
    response = await graph.http.get(
        f"/v1.0/users/{tenant.room.id}/calendarView", params=WINDOW | {"$top": "1000000"}
    )
    assert response.status_code == 200
    assert len(response.json()["value"]) == 3


async def test_prefer_max_page_size_and_time_zone(tenant: Any, graph: Any) -> None:
    book_day(tenant, 4)
    response = await graph.http.get(
        f"/v1.0/users/{tenant.room.id}/calendarView",
        params=WINDOW,
        headers={"Prefer": 'outlook.timezone="W. Europe Standard Time", odata.maxpagesize=3'},
    )
    assert len(response.json()["value"]) == 3
    applied = response.headers["Preference-Applied"]
    assert 'outlook.timezone="W. Europe Standard Time"' in applied
    assert "odata.maxpagesize=3" in applied
    first = response.json()["value"][0]
    assert first["start"] == {
        "dateTime": "2026-03-17T08:00:00.0000000",
        "timeZone": "W. Europe Standard Time",
    }


@pytest.mark.parametrize(
    "header",
    [
        "outlook.timezone=Pacific Standard Time",
        "outlook.timezone = Pacific Standard Time ; odata.maxpagesize=2",
        "odata.maxpagesize=2, outlook.timezone=America/Los_Angeles",
    ],
)
async def test_prefer_time_zone_may_be_unquoted(tenant: Any, graph: Any, header: str) -> None:
    book_day(tenant, 2)
    response = await graph.http.get(
        f"/v1.0/users/{tenant.room.id}/calendarView", params=WINDOW, headers={"Prefer": header}
    )
    assert response.status_code == 200, response.text
    zone = "America/Los_Angeles" if "America" in header else "Pacific Standard Time"
    assert f'outlook.timezone="{zone}"' in response.headers["Preference-Applied"]
    # 08:00 in Berlin (UTC+1) is 00:00 in Los Angeles (UTC-7 from 8 March 2026).
    assert response.json()["value"][0]["start"] == {
        "dateTime": "2026-03-17T00:00:00.0000000",
        "timeZone": zone,
    }


@pytest.mark.parametrize("zone", ["Pacific", "America", "Mars Standard Time", "../etc"])
async def test_an_unknown_prefer_time_zone_is_ignored(tenant: Any, graph: Any, zone: str) -> None:
    book_day(tenant, 1)
    response = await graph.http.get(
        f"/v1.0/users/{tenant.room.id}/calendarView",
        params=WINDOW,
        headers={"Prefer": f"outlook.timezone={zone}"},
    )
    assert response.status_code == 200
    assert "Preference-Applied" not in response.headers
    assert response.json()["value"][0]["start"]["timeZone"] == "UTC"


async def test_all_day_events_stay_midnight_to_midnight(tenant: Any, graph: Any) -> None:
    tenant.state.calendars.create_event(
        tenant.room.id,
        {
            "subject": "Floor renovation",
            "isAllDay": True,
            "showAs": "oof",
            "start": tenant.when("2026-03-18T00:00:00"),
            "end": tenant.when("2026-03-19T00:00:00"),
        },
    )
    for prefer in ({}, {"Prefer": 'outlook.timezone="Pacific Standard Time"'}):
        response = await graph.http.get(
            f"/v1.0/users/{tenant.room.id}/calendarView", params=WINDOW, headers=prefer
        )
        (event,) = response.json()["value"]
        assert event["isAllDay"] is True
        assert event["start"]["dateTime"] == "2026-03-18T00:00:00.0000000"
        assert event["end"]["dateTime"] == "2026-03-19T00:00:00.0000000"


async def test_window_offsets_are_honoured(tenant: Any, graph: Any) -> None:
    book_day(tenant, 1)  # 08:00-08:29 Berlin = 07:00 UTC
    inside = await graph.http.get(
        f"/v1.0/users/{tenant.room.id}/calendarView",
        params={
            "startDateTime": "2026-03-17T07:45:00+01:00",
            "endDateTime": "2026-03-17T08:15:00+01:00",
        },
    )
    assert len(inside.json()["value"]) == 1
    outside = await graph.http.get(
        f"/v1.0/users/{tenant.room.id}/calendarView",
        params={"startDateTime": "2026-03-17T07:45:00", "endDateTime": "2026-03-17T08:15:00"},
    )
    assert outside.json()["value"] == []


async def test_readbasic_apps_never_see_bodies(tenant: Any, graph: Any) -> None:
    tenant.state.calendars.create_event(
        tenant.tentative_room.id,
        {
            "subject": "Secret agenda",
            "body": {"contentType": "text", "content": "the plan"},
            "start": tenant.when("2026-03-17T10:00:00"),
            "end": tenant.when("2026-03-17T11:00:00"),
        },
        organizer=tenant.person.upn,
    )
    path = f"/v1.0/users/{tenant.tentative_room.id}/calendarView"
    full = (await graph.http.get(path, params=WINDOW)).json()["value"][0]
    assert full["body"]["content"] == "the plan"
    assert full["bodyPreview"] == "the plan"
    await graph.as_app("readbasic")
    basic = (await graph.http.get(path, params=WINDOW)).json()["value"][0]
    assert "body" not in basic
    assert "bodyPreview" not in basic
    assert basic["subject"] == "Secret agenda"
    selected = await graph.http.get(path, params=WINDOW | {"$select": "subject,body"})
    assert set(selected.json()["value"][0]) == {"@odata.etag", "id", "subject"}


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({}, 400, "ErrorInvalidParameter"),
        ({"startDateTime": "2026-03-16T00:00:00Z"}, 400, "ErrorInvalidParameter"),
        (WINDOW | {"startDateTime": "yesterday"}, 400, "ErrorInvalidParameter"),
        (WINDOW | {"$top": "0"}, 400, "ErrorInvalidUrlQuery"),
        (WINDOW | {"$top": "-1"}, 400, "ErrorInvalidUrlQuery"),
        (WINDOW | {"startDateTime": "2026-03-16T00:00:00 01:00"}, 400, "ErrorInvalidParameter"),
        (WINDOW | {"$top": "ten"}, 400, "ErrorInvalidUrlQuery"),
        (WINDOW | {"$select": "subject,nonsense"}, 400, "RequestBroker--ParseUri"),
        (WINDOW | {"$frobnicate": "1"}, 400, "BadRequest"),
    ],
)
async def test_bad_parameters_get_graph_errors(
    tenant: Any, graph: Any, params: dict[str, str], status: int, code: str
) -> None:
    response = await graph.http.get(f"/v1.0/users/{tenant.room.id}/calendarView", params=params)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}


async def test_unknown_user_and_unknown_route(tenant: Any, graph: Any) -> None:
    tenant.apps["directory"] = tenant.state.apps.add(
        App("user-reader", "user-secret", "directory", roles={"User.Read.All"})
    )
    await graph.as_app("directory")
    directory = await graph.http.get("/v1.0/users/nobody@contoso.example")
    assert directory.status_code == 404
    assert directory.json()["error"]["code"] == "Request_ResourceNotFound"
    await graph.as_app("full")
    response = await graph.http.get(
        "/v1.0/users/nobody@contoso.example/calendarView", params=WINDOW
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "ErrorInvalidUser"
    route = await graph.http.get("/v1.0/users/nobody@contoso.example/mailFolders")
    assert route.status_code == 400
    assert route.json()["error"]["code"] == "BadRequest"


@pytest.mark.parametrize("casing", [str.lower, str.upper, lambda name: name[0].upper() + name[1:]])
async def test_window_parameter_names_are_case_insensitive(
    tenant: Any, graph: Any, casing: Any
) -> None:
    # Microsoft's calendarView examples write "startdatetime" and "enddatetime".
    book_day(tenant, 12)
    path = f"/v1.0/users/{tenant.room.upn}/calendarView"
    expected = await graph.http.get(path, params=WINDOW | {"$top": "100"})
    assert expected.status_code == 200
    renamed = {casing(k): v for k, v in WINDOW.items()}
    assert set(renamed).isdisjoint(WINDOW)
    ids: list[str] = []
    url: str | None = path
    params: dict[str, str] | None = renamed
    while url:
        response = await graph.http.get(url, params=params)
        assert response.status_code == 200, response.text
        ids += [e["id"] for e in response.json()["value"]]
        url, params = response.json().get("@odata.nextLink"), None
    assert ids == [e["id"] for e in expected.json()["value"]]
    assert len(ids) == 12


@pytest.mark.parametrize("name", ["createdDateTime", "lastModifiedDateTime", "createddatetime"])
async def test_created_and_modified_times_cannot_be_selected_in_a_view(
    tenant: Any, graph: Any, name: str
) -> None:
    book_day(tenant, 1)
    response = await graph.http.get(
        f"/v1.0/users/{tenant.room.upn}/calendarView",
        params=WINDOW | {"$select": f"id,start,{name}"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "RequestBroker--ParseUri"
    # Listing events (no view) still selects them.
    listed = await graph.http.get(
        f"/v1.0/users/{tenant.room.upn}/events", params={"$select": f"id,{name}"}
    )
    assert listed.status_code == 200
    assert len(listed.json()["value"]) == 1
