"""Property tests: the sweep-based availability functions against a brute-force reference."""

from __future__ import annotations

import datetime as dt
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from bookingcache.domain.availability import (
    RoomStatus,
    availability_view,
    busy_intervals,
    next_change,
    placed_interval,
    room_availability,
    status_at,
    timeline,
)
from bookingcache.domain.events import BasicEvent, EventType, ShowAs
from bookingcache.domain.intervals import Interval
from bookingcache.domain.timezones import resolve_time_zone

# Spans the Europe/Berlin spring-forward night (2026-03-29).
BASE = dt.datetime(2026, 3, 28, tzinfo=dt.UTC)
QUARTER = dt.timedelta(minutes=15)
FIVE = dt.timedelta(minutes=5)
ZONES = ["UTC", "Europe/Berlin", "W. Europe Standard Time", "Asia/Kolkata", "America/New_York"]

# Reference rules, written independently of the implementation.
PRIORITY = [
    RoomStatus.OOF,
    RoomStatus.BUSY,
    RoomStatus.TENTATIVE,
    RoomStatus.WORKING_ELSEWHERE,
]
OCCUPYING = {RoomStatus.OOF, RoomStatus.BUSY, RoomStatus.TENTATIVE}
DIGIT = {
    RoomStatus.OOF: "3",
    RoomStatus.BUSY: "2",
    RoomStatus.TENTATIVE: "1",
    RoomStatus.WORKING_ELSEWHERE: "0",
    RoomStatus.FREE: "0",
}


def ref_span(event: BasicEvent, tz: dt.tzinfo) -> tuple[dt.datetime, dt.datetime]:
    if event.is_all_day:
        first, last = event.start.date(), event.end.date()
        return (
            dt.datetime(first.year, first.month, first.day, tzinfo=tz),
            dt.datetime(last.year, last.month, last.day, tzinfo=tz),
        )
    return event.start, event.end


def ref_event_status(event: BasicEvent) -> RoomStatus | None:
    if event.is_cancelled or event.type == EventType.SERIES_MASTER:
        return None
    if event.show_as == ShowAs.FREE:
        return None
    if event.show_as == ShowAs.UNKNOWN:
        return RoomStatus.BUSY
    return RoomStatus(event.show_as.value)


def ref_status(events: list[BasicEvent], at: dt.datetime, tz: dt.tzinfo) -> RoomStatus:
    present = set()
    for event in events:
        status = ref_event_status(event)
        start, end = ref_span(event, tz)
        if status is not None and start <= at < end:
            present.add(status)
    return next((status for status in PRIORITY if status in present), RoomStatus.FREE)


def ref_view(events: list[BasicEvent], window: Interval, step: dt.timedelta, tz: dt.tzinfo) -> str:
    digits = []
    slot_start = window.start
    while slot_start < window.end:
        slot_end = min(slot_start + step, window.end)
        present = set()
        for event in events:
            status = ref_event_status(event)
            start, end = ref_span(event, tz)
            if status is not None and max(start, slot_start) < min(end, slot_end):
                present.add(status)
        strongest = next((s for s in PRIORITY if s in present), RoomStatus.FREE)
        digits.append(DIGIT[strongest])
        slot_start += step
    return "".join(digits)


def grid(start: dt.datetime, end: dt.datetime, step: dt.timedelta = FIVE) -> list[dt.datetime]:
    points = []
    point = start
    while point < end:
        points.append(point)
        point += step
    return points


@st.composite
def events(draw: st.DrawFn) -> BasicEvent:
    show_as = draw(st.sampled_from(ShowAs))
    common = {
        "id": "e",
        "show_as": show_as,
        "is_cancelled": draw(st.integers(0, 3)) == 0,
        "type": draw(
            st.sampled_from(
                [EventType.SINGLE_INSTANCE, EventType.OCCURRENCE, EventType.SERIES_MASTER]
            )
        ),
    }
    if draw(st.integers(0, 5)) == 0:
        first = BASE.date() + dt.timedelta(days=draw(st.integers(-1, 3)))
        last = first + dt.timedelta(days=draw(st.integers(1, 2)))
        return BasicEvent(
            start=dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC),
            end=dt.datetime.combine(last, dt.time(), tzinfo=dt.UTC),
            is_all_day=True,
            **common,
        )
    start = BASE + draw(st.integers(0, 4 * 96)) * QUARTER
    return BasicEvent(start=start, end=start + draw(st.integers(0, 16)) * QUARTER, **common)


event_lists = st.lists(events(), max_size=20)
zones = st.sampled_from(ZONES).map(resolve_time_zone)
instants = st.integers(-24, 5 * 24 * 12).map(lambda n: BASE + n * FIVE)


@st.composite
def windows(draw: st.DrawFn) -> Interval:
    start = draw(instants)
    return Interval(start, start + draw(st.integers(1, 2 * 24 * 12)) * FIVE)


PROPERTY = settings(max_examples=100, deadline=None)


@PROPERTY
@given(event_lists, zones, instants, st.integers(0, 299))
def test_status_at_matches_reference(
    items: list[BasicEvent], tz: dt.tzinfo, at: dt.datetime, seconds: int
) -> None:
    for instant in (at, at + dt.timedelta(seconds=seconds)):
        assert status_at(items, at=instant, tz=tz) == ref_status(items, instant, tz)


@PROPERTY
@given(event_lists, zones, instants, st.integers(0, 2 * 24 * 12))
def test_next_change_is_the_first_change(
    items: list[BasicEvent], tz: dt.tzinfo, at: dt.datetime, horizon: int
) -> None:
    until = at + horizon * FIVE
    now_status = ref_status(items, at, tz)
    found = next_change(items, at=at, tz=tz, until=until)
    # Changes only happen on the quarter-hour grid, which the five-minute grid contains.
    if found is None:
        for point in grid(at + FIVE, until + FIVE):
            assert ref_status(items, point, tz) == now_status, point
        return
    instant, new_status = found
    assert at < instant <= until
    assert new_status != now_status
    assert ref_status(items, instant, tz) == new_status
    for point in grid(at, instant):
        assert ref_status(items, point, tz) == now_status, point


@PROPERTY
@given(event_lists, zones, windows())
def test_timeline_matches_reference(
    items: list[BasicEvent], tz: dt.tzinfo, window: Interval
) -> None:
    segments = timeline(items, window=window, tz=tz)
    for segment in segments:
        assert window.start <= segment.start < segment.end <= window.end
        assert segment.status not in (RoomStatus.FREE, RoomStatus.UNKNOWN)
    for left, right in itertools.pairwise(segments):
        assert left.end <= right.start
        assert left.end < right.start or left.status != right.status  # maximal
    for point in grid(window.start, window.end):
        shown = next((s.status for s in segments if s.start <= point < s.end), RoomStatus.FREE)
        assert shown == ref_status(items, point, tz), point


@PROPERTY
@given(event_lists, zones, windows())
def test_busy_intervals_match_reference(
    items: list[BasicEvent], tz: dt.tzinfo, window: Interval
) -> None:
    busy = busy_intervals(items, window=window, tz=tz)
    for left, right in itertools.pairwise(busy):
        assert left.end < right.start
    for point in grid(window.start, window.end):
        covered = any(b.start <= point < b.end for b in busy)
        assert covered == (ref_status(items, point, tz) in OCCUPYING), point


@PROPERTY
@given(
    event_lists,
    zones,
    windows(),
    st.sampled_from([5, 10, 15, 30, 45, 60, 90, 1440]).map(lambda m: dt.timedelta(minutes=m)),
)
def test_availability_view_matches_reference(
    items: list[BasicEvent], tz: dt.tzinfo, window: Interval, step: dt.timedelta
) -> None:
    view = availability_view(items, window=window, interval=step, tz=tz)
    slots = -(-(window.end - window.start) // step)
    assert len(view) == slots
    assert view == ref_view(items, window, step, tz)
    # Never free where a busy event covers the slot.
    for number, digit in enumerate(view):
        slot = Interval(
            window.start + number * step, min(window.start + (number + 1) * step, window.end)
        )
        for event in items:
            start, end = ref_span(event, tz)
            if ref_event_status(event) == RoomStatus.BUSY and max(start, slot.start) < min(
                end, slot.end
            ):
                assert digit in "23"


@PROPERTY
@given(event_lists, zones, windows(), instants, st.integers(0, 180))
def test_room_availability_is_consistent(
    items: list[BasicEvent], tz: dt.tzinfo, window: Interval, now: dt.datetime, min_minutes: int
) -> None:
    min_free = dt.timedelta(minutes=min_minutes)
    answer = room_availability(
        items,
        now=now,
        window=window,
        tz=tz,
        min_free=min_free,
        last_success_at=now,
        staleness_bound=dt.timedelta(hours=1),
    )
    assert not answer.stale
    assert answer.status == ref_status(items, now, tz)
    expected_change = next_change(items, at=now, tz=tz, until=window.end)
    assert (answer.next_change_at, answer.next_status) == (
        expected_change if expected_change else (None, None)
    )
    assert answer.busy == busy_intervals(items, window=window, tz=tz)
    assert answer.segments == timeline(items, window=window, tz=tz)
    for slot in answer.free:
        assert slot.duration() >= min_free
        assert window.start <= slot.start
        assert slot.end <= window.end
        assert not any(slot.overlaps(b) for b in answer.busy)
    # Nothing of the window is lost: with no minimum, busy and free tile it exactly.
    every_gap = room_availability(
        items,
        now=now,
        window=window,
        tz=tz,
        min_free=dt.timedelta(0),
        last_success_at=now,
        staleness_bound=dt.timedelta(hours=1),
    ).free
    tiles = sorted([*answer.busy, *every_gap])
    assert tiles[0].start == window.start
    assert tiles[-1].end == window.end
    for left, right in itertools.pairwise(tiles):
        assert left.end == right.start


@settings(max_examples=200, deadline=None)
@given(
    st.dates(min_value=dt.date(2025, 1, 1), max_value=dt.date(2027, 12, 31)),
    st.integers(1, 3),
    st.sampled_from(["Europe/Berlin", "W. Europe Standard Time", "Pacific Standard Time", "UTC"]),
)
def test_all_day_events_cover_whole_local_days(first: dt.date, days: int, zone: str) -> None:
    tz = resolve_time_zone(zone)
    last = first + dt.timedelta(days=days)
    event = BasicEvent(
        id="a",
        start=dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC),
        end=dt.datetime.combine(last, dt.time(), tzinfo=dt.UTC),
        is_all_day=True,
    )
    placed = placed_interval(event, tz)
    local_start, local_end = placed.start.astimezone(tz), placed.end.astimezone(tz)
    assert (local_start.date(), local_start.time()) == (first, dt.time())
    assert (local_end.date(), local_end.time()) == (last, dt.time())
    # Local days last 23, 24 or 25 hours; together the event lasts as long as its local days.
    offset_change = local_end.utcoffset() - local_start.utcoffset()  # type: ignore[operator]
    assert placed.duration() == dt.timedelta(days=days) - offset_change
    # The instant before the first local midnight and the last local midnight are outside.
    assert status_at([event], at=placed.start - dt.timedelta(seconds=1), tz=tz) == RoomStatus.FREE
    assert status_at([event], at=placed.start, tz=tz) == RoomStatus.BUSY
    assert status_at([event], at=placed.end, tz=tz) == RoomStatus.FREE
