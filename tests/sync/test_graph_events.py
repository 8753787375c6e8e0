"""Graph event JSON → BasicEvent, checked against the shared Graph wire samples."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from bookingcache.domain.events import EventType, Sensitivity, ShowAs
from bookingcache.errors import UpstreamError
from bookingcache.sync.sources.graph_events import parse_graph_event
from tests.support.samples import sample


def _sample(name: str) -> dict[str, Any]:
    data: dict[str, Any] = sample(name)
    return data


def test_calendar_view_page_sample() -> None:
    page = _sample("calendarview-page1.json")
    events = [parse_graph_event(raw) for raw in page["value"]]
    assert all(event is not None for event in events)
    single, occurrence, all_day, cancelled, private = events
    assert single is not None
    assert occurrence is not None
    assert all_day is not None
    assert cancelled is not None
    assert private is not None
    assert single.start == dt.datetime(2026, 11, 24, 8, tzinfo=dt.UTC)
    assert single.end == dt.datetime(2026, 11, 24, 9, tzinfo=dt.UTC)
    assert single.show_as is ShowAs.BUSY
    assert single.title == "Kari Nordmann"
    assert occurrence.type is EventType.OCCURRENCE
    assert occurrence.series_master_id == page["value"][1]["seriesMasterId"]
    assert all_day.is_all_day
    assert all_day.show_as is ShowAs.OOF
    assert all_day.start.date() == dt.date(2026, 11, 25)
    assert all_day.end.date() == dt.date(2026, 11, 26)
    assert cancelled.is_cancelled
    assert cancelled.show_as is ShowAs.FREE
    assert private.sensitivity is Sensitivity.PRIVATE
    assert private.show_as is ShowAs.TENTATIVE


def test_delta_page_sample_carries_full_payload_but_only_basic_fields_are_kept() -> None:
    page = _sample("calendarview-delta-last.json")
    event = parse_graph_event(page["value"][0])
    assert event is not None
    assert event.start == dt.datetime(2026, 11, 24, 8, 30, tzinfo=dt.UTC)
    assert not hasattr(event, "body")
    assert not hasattr(event, "organizer")


def test_windows_zone_names_are_converted_to_utc() -> None:
    raw = _sample("calendarview-page1.json")["value"][0] | {
        "start": {"dateTime": "2026-07-01T09:00:00.0000000", "timeZone": "W. Europe Standard Time"},
        "end": {"dateTime": "2026-07-01T10:00:00.0000000", "timeZone": "Europe/Oslo"},
    }
    event = parse_graph_event(raw)
    assert event is not None
    assert event.start == dt.datetime(2026, 7, 1, 7, tzinfo=dt.UTC)
    assert event.end == dt.datetime(2026, 7, 1, 8, tzinfo=dt.UTC)


def test_all_day_events_keep_their_local_dates_whatever_the_zone() -> None:
    raw = _sample("calendarview-page1.json")["value"][2] | {
        "start": {"dateTime": "2026-11-25T00:00:00.0000000", "timeZone": "Tokyo Standard Time"},
        "end": {"dateTime": "2026-11-26T00:00:00.0000000", "timeZone": "Tokyo Standard Time"},
    }
    event = parse_graph_event(raw)
    assert event is not None
    assert event.is_all_day
    assert event.start == dt.datetime(2026, 11, 25, tzinfo=dt.UTC)


def test_series_master_is_skipped_and_unknown_values_are_safe() -> None:
    base = _sample("calendarview-page1.json")["value"][0]
    assert parse_graph_event(base | {"type": "seriesMaster"}) is None
    odd = parse_graph_event(base | {"showAs": "somethingNew", "sensitivity": "secretish"})
    assert odd is not None
    assert odd.show_as is ShowAs.UNKNOWN
    assert odd.sensitivity is Sensitivity.PRIVATE


@pytest.mark.parametrize(
    "change",
    [
        {"start": {"dateTime": "not a date", "timeZone": "UTC"}},
        {"start": {"dateTime": "2026-11-24T08:00:00", "timeZone": "Mars/Olympus"}},
        {"id": ""},
        {"end": None},
        {"start": {"dateTime": "2026-11-24T10:00:00", "timeZone": "UTC"}},
    ],
)
def test_unreadable_events_are_upstream_errors(change: dict[str, Any]) -> None:
    raw = _sample("calendarview-page1.json")["value"][0] | change
    with pytest.raises(UpstreamError):
        parse_graph_event(raw)
