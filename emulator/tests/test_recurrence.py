"""Recurrence expansion: every pattern type and range, in the event's own zone across DST."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from graph_emulator import recurrence as rec
from graph_emulator.errors import GraphError


def series(pattern: dict[str, Any], range_: dict[str, Any]) -> dict[str, Any]:
    return rec.normalize(
        {"pattern": pattern, "range": range_},
        start_date=dt.date.fromisoformat(range_["startDate"]),
        zone_name="UTC",
    )


def dates(recurrence: dict[str, Any], until: str = "2027-12-31") -> list[str]:
    found = rec.occurrence_dates(recurrence, until=dt.date.fromisoformat(until))
    return [d.isoformat() for d in found]


def test_daily_with_interval_and_end_date() -> None:
    r = series(
        {"type": "daily", "interval": 2},
        {"type": "endDate", "startDate": "2026-03-01", "endDate": "2026-03-09"},
    )
    assert dates(r) == ["2026-03-01", "2026-03-03", "2026-03-05", "2026-03-07", "2026-03-09"]


def test_weekly_every_second_week_on_two_days_numbered() -> None:
    r = series(
        {
            "type": "weekly",
            "interval": 2,
            "daysOfWeek": ["tuesday", "thursday"],
            "firstDayOfWeek": "monday",
        },
        {"type": "numbered", "startDate": "2026-03-05", "numberOfOccurrences": 5},
    )
    # Starts on a Thursday: that week's Tuesday is before the range and does not count.
    assert dates(r) == ["2026-03-05", "2026-03-17", "2026-03-19", "2026-03-31", "2026-04-02"]


def test_weekly_first_day_of_week_decides_which_weeks_count() -> None:
    pattern = {"type": "weekly", "interval": 2, "daysOfWeek": ["sunday", "monday"]}
    rng = {"type": "numbered", "startDate": "2026-03-02", "numberOfOccurrences": 4}
    sunday_first = series(pattern | {"firstDayOfWeek": "sunday"}, rng)
    monday_first = series(pattern | {"firstDayOfWeek": "monday"}, rng)
    # Sunday-first weeks: Mon 2 Mar (week of 1 Mar), then Sun 15 + Mon 16, then Sun 29.
    assert dates(sunday_first) == ["2026-03-02", "2026-03-15", "2026-03-16", "2026-03-29"]
    # Monday-first weeks: Mon 2 + Sun 8, then Mon 16 + Sun 22.
    assert dates(monday_first) == ["2026-03-02", "2026-03-08", "2026-03-16", "2026-03-22"]


def test_absolute_monthly_31st_falls_on_last_day_of_short_months() -> None:
    r = series(
        {"type": "absoluteMonthly", "interval": 1, "dayOfMonth": 31},
        {"type": "numbered", "startDate": "2026-01-31", "numberOfOccurrences": 4},
    )
    assert dates(r) == ["2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30"]


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        ("first", ["2026-03-03", "2026-05-05", "2026-07-07"]),
        ("second", ["2026-03-10", "2026-05-12", "2026-07-14"]),
        ("fourth", ["2026-03-24", "2026-05-26", "2026-07-28"]),
        ("last", ["2026-03-31", "2026-05-26", "2026-07-28"]),
    ],
)
def test_relative_monthly_by_index(index: str, expected: list[str]) -> None:
    r = series(
        {"type": "relativeMonthly", "interval": 2, "daysOfWeek": ["tuesday"], "index": index},
        {"type": "numbered", "startDate": "2026-03-01", "numberOfOccurrences": 3},
    )
    assert dates(r) == expected


def test_absolute_and_relative_yearly() -> None:
    absolute = series(
        {"type": "absoluteYearly", "interval": 1, "month": 2, "dayOfMonth": 29},
        {"type": "numbered", "startDate": "2026-01-01", "numberOfOccurrences": 3},
    )
    assert dates(absolute, "2030-01-01") == ["2026-02-28", "2027-02-28", "2028-02-29"]
    relative = series(
        {
            "type": "relativeYearly",
            "interval": 1,
            "month": 11,
            "daysOfWeek": ["thursday"],
            "index": "fourth",
        },
        {"type": "endDate", "startDate": "2026-01-01", "endDate": "2027-12-31"},
    )
    assert dates(relative) == ["2026-11-26", "2027-11-25"]


def test_no_end_stops_at_the_requested_horizon() -> None:
    r = series(
        {"type": "weekly", "interval": 1, "daysOfWeek": ["friday"]},
        {"type": "noEnd", "startDate": "2026-03-02"},
    )
    assert dates(r, "2026-03-31") == ["2026-03-06", "2026-03-13", "2026-03-20", "2026-03-27"]


@pytest.mark.parametrize(
    "bad",
    [
        {"pattern": {"type": "hourly"}, "range": {"type": "noEnd", "startDate": "2026-03-01"}},
        {"pattern": {"type": "weekly"}, "range": {"type": "noEnd", "startDate": "2026-03-01"}},
        {
            "pattern": {"type": "daily", "interval": 0},
            "range": {"type": "noEnd", "startDate": "2026-03-01"},
        },
        {"pattern": {"type": "daily"}, "range": {"type": "numbered", "startDate": "2026-03-01"}},
        {
            "pattern": {"type": "daily"},
            "range": {"type": "endDate", "startDate": "2026-03-05", "endDate": "2026-03-01"},
        },
        {"pattern": {"type": "daily"}},
    ],
)
def test_invalid_recurrence_is_a_graph_400(bad: dict[str, Any]) -> None:
    with pytest.raises(GraphError) as caught:
        rec.normalize(bad, start_date=dt.date(2026, 3, 1), zone_name="UTC")
    assert caught.value.status == 400


async def test_berlin_meeting_stays_at_nine_local_across_the_march_change(
    tenant: Any, graph: Any
) -> None:
    master = tenant.book(
        tenant.room,
        "2026-03-23T09:00:00",
        "2026-03-23T10:00:00",
        recurrence={
            "pattern": {"type": "daily", "interval": 1},
            "range": {"type": "numbered", "startDate": "2026-03-23", "numberOfOccurrences": 14},
        },
    )
    response = await graph.http.get(
        f"/v1.0/users/{tenant.room.upn}/calendar/calendarView",
        params={
            "startDateTime": "2026-03-20T00:00:00Z",
            "endDateTime": "2026-04-20T00:00:00Z",
            "$top": "50",
        },
    )
    assert response.status_code == 200, response.text
    value = response.json()["value"]
    assert len(value) == 14
    assert {v["seriesMasterId"] for v in value} == {master["id"]}
    assert {v["type"] for v in value} == {"occurrence"}
    utc_starts = [v["start"]["dateTime"][11:16] for v in value]
    # CET (UTC+1) until Sunday 29 March, CEST (UTC+2) from then on.
    assert utc_starts[:6] == ["08:00"] * 6
    assert utc_starts[6:] == ["07:00"] * 8
    local = await graph.http.get(
        f"/v1.0/users/{tenant.room.upn}/calendar/calendarView",
        params={
            "startDateTime": "2026-03-20T00:00:00Z",
            "endDateTime": "2026-04-20T00:00:00Z",
            "$top": "50",
        },
        headers={"Prefer": 'outlook.timezone="Europe/Berlin"'},
    )
    assert {v["start"]["dateTime"][11:] for v in local.json()["value"]} == {"09:00:00.0000000"}
    assert {v["start"]["timeZone"] for v in local.json()["value"]} == {"Europe/Berlin"}


async def test_edited_and_cancelled_occurrences(
    tenant: Any, graph: Any, recording_sink: Any
) -> None:
    master = tenant.book(
        tenant.room,
        "2026-03-16T10:00:00",
        "2026-03-16T10:30:00",
        recurrence={
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday", "wednesday"]},
            "range": {"type": "endDate", "startDate": "2026-03-16", "endDate": "2026-03-31"},
        },
    )
    calendars = tenant.state.calendars
    recording_sink.changes.clear()
    wednesday = dt.datetime(2026, 3, 18, 9, 0, tzinfo=dt.UTC)
    monday = dt.datetime(2026, 3, 23, 9, 0, tzinfo=dt.UTC)
    calendars.cancel_occurrence(tenant.room.id, master["id"], wednesday)
    calendars.update_occurrence(
        tenant.room.id,
        master["id"],
        monday,
        {"start": tenant.when("2026-03-23T14:00:00"), "end": tenant.when("2026-03-23T15:00:00")},
    )
    # Both changes surface as "updated" on the series master, never on the occurrence.
    assert recording_sink.changes
    assert all(c == (tenant.room.id, master["id"], "updated") for c in recording_sink.changes)
    response = await graph.http.get(
        f"/v1.0/users/{tenant.room.id}/calendarView",
        params={"startDateTime": "2026-03-16T00:00:00Z", "endDateTime": "2026-04-01T00:00:00Z"},
    )
    value = response.json()["value"]
    starts = [(v["type"], v["start"]["dateTime"][:16]) for v in value]
    assert starts == [
        ("occurrence", "2026-03-16T09:00"),
        ("exception", "2026-03-23T13:00"),
        ("occurrence", "2026-03-25T09:00"),
        ("occurrence", "2026-03-30T08:00"),
    ]
    exception = value[1]
    # Any occurrence id can be read back, edited or deleted.
    again = await graph.http.get(f"/v1.0/users/{tenant.room.id}/events/{exception['id']}")
    assert again.status_code == 200
    assert again.json()["type"] == "exception"
    assert again.json()["originalStart"] == "2026-03-23T09:00:00Z"
    gone = await graph.http.delete(f"/v1.0/users/{tenant.room.id}/events/{value[2]['id']}")
    assert gone.status_code == 204
    missing = await graph.http.get(f"/v1.0/users/{tenant.room.id}/events/{value[2]['id']}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "ErrorItemNotFound"


async def test_instances_of_a_series_and_the_default_calendar(tenant: Any, graph: Any) -> None:
    master = tenant.book(
        tenant.room,
        "2026-03-16T10:00:00",
        "2026-03-16T10:30:00",
        recurrence={
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
            "range": {"type": "noEnd", "startDate": "2026-03-16"},
        },
    )
    single = tenant.book(tenant.room, "2026-03-17T10:00:00", "2026-03-17T10:30:00")
    path = f"/v1.0/users/{tenant.room.id}/events"
    window = {"startDateTime": "2026-03-01T00:00:00Z", "endDateTime": "2026-04-07T00:00:00Z"}
    response = await graph.http.get(f"{path}/{master['id']}/instances", params=window)
    assert response.status_code == 200
    value = response.json()["value"]
    assert [v["start"]["dateTime"][:10] for v in value] == [
        "2026-03-16",
        "2026-03-23",
        "2026-03-30",
        "2026-04-06",
    ]
    assert {v["seriesMasterId"] for v in value} == {master["id"]}
    not_series = await graph.http.get(f"{path}/{single['id']}/instances", params=window)
    assert not_series.status_code == 400
    no_window = await graph.http.get(f"{path}/{master['id']}/instances")
    assert no_window.json()["error"]["code"] == "ErrorInvalidParameter"
    calendar = await graph.http.get(f"/v1.0/users/{tenant.room.upn}/calendar")
    assert calendar.json()["isDefaultCalendar"] is True
    assert calendar.json()["owner"]["address"] == tenant.room.upn
