"""Example tests, one per availability rule."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bookingcache.domain.availability import (
    RoomSchedule,
    RoomStatus,
    StatusSegment,
    availability_view,
    busy_intervals,
    event_status,
    is_stale,
    next_change,
    placed_interval,
    room_availability,
    schedule_availability,
    status_at,
    timeline,
    validate_view_interval,
    validate_window,
)
from bookingcache.domain.events import BasicEvent, EventType, ShowAs
from bookingcache.domain.intervals import Interval
from bookingcache.domain.timezones import resolve_time_zone
from bookingcache.errors import InvalidInput, InvalidWindow
from tests.support.samples import sample

DAY = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)
BERLIN = ZoneInfo("Europe/Berlin")
MIN = dt.timedelta(minutes=1)


def t(hour: int, minute: int = 0) -> dt.datetime:
    return DAY.replace(hour=hour, minute=minute)


def ev(
    start: dt.datetime, end: dt.datetime, show_as: ShowAs = ShowAs.BUSY, **kw: Any
) -> BasicEvent:
    return BasicEvent(
        id=f"{start:%H%M}-{end:%H%M}-{show_as}", start=start, end=end, show_as=show_as, **kw
    )


def all_day(first: dt.date, last_exclusive: dt.date, **kw: Any) -> BasicEvent:
    return BasicEvent(
        id=f"allday-{first}",
        start=dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC),
        end=dt.datetime.combine(last_exclusive, dt.time(), tzinfo=dt.UTC),
        is_all_day=True,
        **kw,
    )


# --- event status ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("show_as", "expected"),
    [
        (ShowAs.FREE, None),
        (ShowAs.TENTATIVE, RoomStatus.TENTATIVE),
        (ShowAs.BUSY, RoomStatus.BUSY),
        (ShowAs.OOF, RoomStatus.OOF),
        (ShowAs.WORKING_ELSEWHERE, RoomStatus.WORKING_ELSEWHERE),
        (ShowAs.UNKNOWN, RoomStatus.BUSY),
    ],
)
def test_event_status_follows_show_as(show_as: ShowAs, expected: RoomStatus | None) -> None:
    assert event_status(ev(t(9), t(10), show_as)) == expected


def test_cancelled_events_and_series_masters_never_occupy() -> None:
    assert event_status(ev(t(9), t(10), is_cancelled=True)) is None
    assert event_status(ev(t(9), t(10), type=EventType.SERIES_MASTER)) is None
    assert event_status(ev(t(9), t(10), type=EventType.OCCURRENCE)) == RoomStatus.BUSY
    events = [ev(t(9), t(10), is_cancelled=True), ev(t(9), t(10), ShowAs.FREE)]
    assert status_at(events, at=t(9, 30), tz=dt.UTC) == RoomStatus.FREE


# --- status at an instant -------------------------------------------------------------------


def test_status_priority_oof_busy_tentative_elsewhere_free() -> None:
    layers = [
        ev(t(8), t(18), ShowAs.WORKING_ELSEWHERE),
        ev(t(9), t(17), ShowAs.TENTATIVE),
        ev(t(10), t(16), ShowAs.BUSY),
        ev(t(11), t(15), ShowAs.OOF),
    ]
    expected = {
        t(7): RoomStatus.FREE,
        t(8): RoomStatus.WORKING_ELSEWHERE,
        t(9): RoomStatus.TENTATIVE,
        t(10): RoomStatus.BUSY,
        t(11): RoomStatus.OOF,
        t(14, 59): RoomStatus.OOF,
        t(15): RoomStatus.BUSY,
        t(16): RoomStatus.TENTATIVE,
        t(17): RoomStatus.WORKING_ELSEWHERE,
        t(18): RoomStatus.FREE,
    }
    for instant, status in expected.items():
        assert status_at(layers, at=instant, tz=dt.UTC) == status, instant
        assert status_at(list(reversed(layers)), at=instant, tz=dt.UTC) == status, instant


def test_events_are_half_open() -> None:
    events = [ev(t(9), t(10))]
    assert status_at(events, at=t(9), tz=dt.UTC) == RoomStatus.BUSY
    assert status_at(events, at=t(10), tz=dt.UTC) == RoomStatus.FREE


# --- next change ----------------------------------------------------------------------------


def test_next_change_walks_through_touching_and_overlapping_events() -> None:
    events = [ev(t(9), t(10)), ev(t(10), t(11), ShowAs.OOF), ev(t(10, 30), t(12))]
    kw: dict[str, Any] = {"tz": dt.UTC, "until": t(23)}
    assert next_change(events, at=t(8), **kw) == (t(9), RoomStatus.BUSY)
    assert next_change(events, at=t(9), **kw) == (t(10), RoomStatus.OOF)
    assert next_change(events, at=t(10, 45), **kw) == (t(11), RoomStatus.BUSY)
    assert next_change(events, at=t(11), **kw) == (t(12), RoomStatus.FREE)
    assert next_change(events, at=t(12), **kw) is None


def test_touching_events_of_one_status_are_no_change() -> None:
    events = [ev(t(9), t(10)), ev(t(10), t(11))]
    assert next_change(events, at=t(9, 30), tz=dt.UTC, until=t(23)) == (t(11), RoomStatus.FREE)


def test_next_change_respects_until() -> None:
    events = [ev(t(9), t(10))]
    assert next_change(events, at=t(8), tz=dt.UTC, until=t(9)) == (t(9), RoomStatus.BUSY)
    assert next_change(events, at=t(8), tz=dt.UTC, until=t(8, 59)) is None


def test_first_taken_is_the_first_occupied_instant_in_the_stretch() -> None:
    schedule = RoomSchedule.from_events(
        [
            ev(t(8), t(9), ShowAs.WORKING_ELSEWHERE),  # leaves the room usable
            ev(t(10), t(11), ShowAs.TENTATIVE),
            ev(t(10, 30), t(12)),
            ev(t(13), t(14), ShowAs.OOF),
        ],
        tz=dt.UTC,
    )
    assert schedule.first_taken(t(7), t(18)) == t(10)
    assert schedule.first_taken(t(8), t(10)) is None  # half open: taken from 10:00 on
    assert schedule.first_taken(t(10, 45), t(18)) == t(10, 45)  # already taken at the start
    assert schedule.first_taken(t(12), t(18)) == t(13)
    assert schedule.first_taken(t(12), t(13)) is None
    assert schedule.first_taken(t(14), t(23)) is None
    assert RoomSchedule.from_events([], tz=dt.UTC).first_taken(t(0), t(23)) is None


# --- all-day events -------------------------------------------------------------------------


def test_all_day_event_is_placed_in_the_room_zone() -> None:
    event = all_day(dt.date(2026, 11, 24), dt.date(2026, 11, 25))
    assert placed_interval(event, BERLIN) == Interval(
        dt.datetime(2026, 11, 23, 23, tzinfo=dt.UTC), dt.datetime(2026, 11, 24, 23, tzinfo=dt.UTC)
    )
    assert status_at([event], at=dt.datetime(2026, 11, 23, 23, 30, tzinfo=dt.UTC), tz=BERLIN) == (
        RoomStatus.BUSY
    )
    assert status_at([event], at=dt.datetime(2026, 11, 24, 23, 30, tzinfo=dt.UTC), tz=BERLIN) == (
        RoomStatus.FREE
    )


@pytest.mark.parametrize("zone_name", ["Europe/Berlin", "W. Europe Standard Time"])
def test_all_day_across_dst_has_local_length(zone_name: str) -> None:
    tz = resolve_time_zone(zone_name)
    spring = placed_interval(all_day(dt.date(2026, 3, 29), dt.date(2026, 3, 30)), tz)
    autumn = placed_interval(all_day(dt.date(2026, 10, 25), dt.date(2026, 10, 26)), tz)
    assert spring.duration() == dt.timedelta(hours=23)
    assert spring.start == dt.datetime(2026, 3, 28, 23, tzinfo=dt.UTC)
    assert autumn.duration() == dt.timedelta(hours=25)
    assert autumn.end == dt.datetime(2026, 10, 25, 23, tzinfo=dt.UTC)


def test_all_day_dates_are_read_as_stored_not_converted() -> None:
    # Graph's midnight-to-midnight in some other zone still means the same local dates.
    tokyo = ZoneInfo("Asia/Tokyo")
    event = BasicEvent(
        id="a",
        start=dt.datetime(2026, 11, 24, tzinfo=tokyo),
        end=dt.datetime(2026, 11, 25, tzinfo=tokyo),
        is_all_day=True,
    )
    assert placed_interval(event, BERLIN).start == dt.datetime(2026, 11, 23, 23, tzinfo=dt.UTC)


def test_midnight_skipped_by_dst_starts_the_day_at_the_first_instant() -> None:
    # Santiago moves clocks from 00:00 to 01:00 on 2026-09-06.
    santiago = ZoneInfo("America/Santiago")
    day = placed_interval(all_day(dt.date(2026, 9, 6), dt.date(2026, 9, 7)), santiago)
    assert day.start.astimezone(santiago).hour == 1
    assert day.duration() == dt.timedelta(hours=23)


# --- windows --------------------------------------------------------------------------------


def test_timeline_cuts_the_window_into_segments() -> None:
    events = [ev(t(7), t(9)), ev(t(8), t(10), ShowAs.OOF), ev(t(11), t(12), ShowAs.TENTATIVE)]
    assert timeline(events, window=Interval(t(8, 30), t(11, 30)), tz=dt.UTC) == [
        StatusSegment(t(8, 30), t(10), RoomStatus.OOF),
        StatusSegment(t(11), t(11, 30), RoomStatus.TENTATIVE),
    ]


def test_busy_intervals_merge_occupying_statuses_and_skip_working_elsewhere() -> None:
    events = [
        ev(t(8), t(9), ShowAs.TENTATIVE),
        ev(t(9), t(10), ShowAs.OOF),
        ev(t(10), t(11), ShowAs.WORKING_ELSEWHERE),
        ev(t(12), t(13), ShowAs.FREE),
        ev(t(14), t(20)),
    ]
    assert busy_intervals(events, window=Interval(t(0), t(18)), tz=dt.UTC) == [
        Interval(t(8), t(10)),
        Interval(t(14), t(18)),
    ]


# --- availabilityView -----------------------------------------------------------------------


def test_view_digits_and_partial_last_slot() -> None:
    events = [
        ev(t(8), t(8, 10), ShowAs.TENTATIVE),
        ev(t(8, 20), t(8, 40)),
        ev(t(9), t(9, 30), ShowAs.OOF),
        ev(t(9, 30), t(10), ShowAs.WORKING_ELSEWHERE),
    ]
    window = Interval(t(8), t(10, 5))
    kw: dict[str, Any] = {"window": window, "interval": 30 * MIN, "tz": dt.UTC}
    assert availability_view(events, **kw) == "22300"
    assert availability_view(events, working_elsewhere_digit="4", **kw) == "22340"
    assert availability_view([], **kw) == "00000"
    assert availability_view(events, window=window, interval=15 * MIN, tz=dt.UTC) == ("122033000")


def test_view_refuses_bad_options() -> None:
    window = Interval(t(8), t(10))
    with pytest.raises(InvalidInput):
        availability_view(
            [], window=window, interval=30 * MIN, tz=dt.UTC, working_elsewhere_digit="9"
        )
    with pytest.raises(InvalidWindow):
        availability_view([], window=window, interval=dt.timedelta(0), tz=dt.UTC)


def _graph_time(value: dict[str, str]) -> dt.datetime:
    assert value["timeZone"] == "UTC"
    return dt.datetime.fromisoformat(value["dateTime"][:26]).replace(tzinfo=dt.UTC)


def test_view_matches_graph_getschedule_sample() -> None:
    expected = sample("getschedule-response.json")
    window = Interval(t(8), t(12))  # the sample asks 08:00-12:00 UTC in 30-minute slots
    for schedule in expected["value"]:
        events = [
            BasicEvent(
                id=str(number),
                start=_graph_time(item["start"]),
                end=_graph_time(item["end"]),
                show_as=ShowAs(item["status"]),
            )
            for number, item in enumerate(schedule["scheduleItems"])
        ]
        view = availability_view(events, window=window, interval=30 * MIN, tz=dt.UTC)
        assert view == schedule["availabilityView"], schedule["scheduleId"]


# --- staleness and the whole answer ---------------------------------------------------------


def test_staleness() -> None:
    bound = dt.timedelta(hours=1)
    assert is_stale(None, now=t(12), bound=bound)
    assert not is_stale(t(11), now=t(12), bound=bound)
    assert is_stale(t(10, 59), now=t(12), bound=bound)


def test_room_availability_fresh_and_stale() -> None:
    events = [ev(t(9), t(10)), ev(t(10, 20), t(11), ShowAs.TENTATIVE), ev(t(13), t(14), ShowAs.OOF)]
    kw: dict[str, Any] = {
        "now": t(9, 30),
        "window": Interval(t(8), t(18)),
        "tz": dt.UTC,
        "min_free": 30 * MIN,
        "staleness_bound": dt.timedelta(hours=1),
    }
    fresh = room_availability(events, last_success_at=t(9), **kw)
    assert not fresh.stale
    assert (fresh.status, fresh.next_change_at, fresh.next_status) == (
        RoomStatus.BUSY,
        t(10),
        RoomStatus.FREE,
    )
    assert fresh.busy == [Interval(t(9), t(10)), Interval(t(10, 20), t(11)), Interval(t(13), t(14))]
    assert fresh.free == [Interval(t(8), t(9)), Interval(t(11), t(13)), Interval(t(14), t(18))]
    assert [s.status for s in fresh.segments] == [
        RoomStatus.BUSY,
        RoomStatus.TENTATIVE,
        RoomStatus.OOF,
    ]

    stale = room_availability(events, last_success_at=t(8), **kw)
    never = room_availability(events, last_success_at=None, **kw)
    for answer in (stale, never):
        assert answer.stale
        assert answer.status == RoomStatus.UNKNOWN
        assert answer.next_change_at is None
        assert answer.next_status is None
        assert answer.busy == fresh.busy
        assert answer.free == fresh.free


# --- validation -----------------------------------------------------------------------------


def test_validate_window() -> None:
    assert validate_window(t(8), t(9)) == Interval(t(8), t(9))
    local = validate_window(t(8).astimezone(BERLIN), t(9).astimezone(BERLIN))
    assert local.start.tzinfo is dt.UTC
    assert validate_window(t(0), t(0) + dt.timedelta(days=62)).duration() == dt.timedelta(days=62)
    with pytest.raises(InvalidWindow, match="before end"):
        validate_window(t(9), t(8))
    with pytest.raises(InvalidWindow, match="before end"):
        validate_window(t(9), t(9))
    with pytest.raises(InvalidWindow, match="62 days"):
        validate_window(t(0), t(0) + dt.timedelta(days=62, seconds=1))
    with pytest.raises(InvalidWindow, match="7 days"):
        validate_window(t(0), t(0) + dt.timedelta(days=8), max_days=7)
    with pytest.raises(InvalidWindow, match="time zone offset"):
        validate_window(dt.datetime(2026, 11, 24, 8), t(9))
    with pytest.raises(InvalidWindow, match="time zone offset"):
        validate_window(t(8), dt.datetime(2026, 11, 24, 9))


@pytest.mark.parametrize("minutes", [5, 15, 30, 60, 1440])
def test_view_interval_in_range(minutes: int) -> None:
    assert validate_view_interval(minutes) == minutes * MIN


@pytest.mark.parametrize("minutes", [-30, 0, 4, 1441, 100_000])
def test_view_interval_out_of_range(minutes: int) -> None:
    with pytest.raises(InvalidWindow, match="between 5 and 1440"):
        validate_view_interval(minutes)


# --- a compiled schedule --------------------------------------------------------------------


def test_one_schedule_answers_many_windows() -> None:
    events = [
        ev(t(9), t(10)),
        ev(t(11), t(12), ShowAs.TENTATIVE),
        ev(t(9, 30), t(9, 45), ShowAs.OOF),
    ]
    schedule = RoomSchedule.from_events(events, tz=dt.UTC)
    for window in (Interval(t(0), t(23)), Interval(t(9, 40), t(11, 30)), Interval(t(13), t(14))):
        assert schedule.timeline(window) == timeline(events, window=window, tz=dt.UTC)
        assert schedule.busy_intervals(window) == busy_intervals(events, window=window, tz=dt.UTC)
        assert schedule.availability_view(window, interval=15 * MIN) == availability_view(
            events, window=window, interval=15 * MIN, tz=dt.UTC
        )
    assert schedule.status_at(t(9, 35)) == RoomStatus.OOF
    assert schedule.free_slots(Interval(t(8), t(13)), min_length=61 * MIN) == []
    assert schedule.free_slots(Interval(t(8), t(13)), min_length=60 * MIN) == [
        Interval(t(8), t(9)),
        Interval(t(10), t(11)),
        Interval(t(12), t(13)),
    ]
    answer = schedule_availability(
        schedule,
        now=t(9, 50),
        window=Interval(t(8), t(13)),
        min_free=60 * MIN,
        last_success_at=t(9),
        staleness_bound=dt.timedelta(hours=1),
    )
    assert (answer.status, answer.next_change_at, answer.next_status) == (
        RoomStatus.BUSY,
        t(10),
        RoomStatus.FREE,
    )


def test_inputs_in_other_zones_give_utc_answers() -> None:
    events = [ev(t(9), t(10))]
    window = Interval(t(8).astimezone(BERLIN), t(12).astimezone(BERLIN))
    answer = room_availability(
        events,
        now=t(8, 30).astimezone(BERLIN),
        window=window,
        tz=BERLIN,
        min_free=30 * MIN,
        last_success_at=t(8).astimezone(BERLIN),
        staleness_bound=dt.timedelta(hours=1),
    )
    assert answer.status == RoomStatus.FREE
    assert answer.next_change_at == t(9)
    assert answer.next_change_at.tzinfo is dt.UTC
    assert answer.busy == [Interval(t(9), t(10))]
    assert answer.free == [Interval(t(8), t(9)), Interval(t(10), t(12))]
    assert all(i.start.tzinfo is dt.UTC and i.end.tzinfo is dt.UTC for i in answer.free)
    assert availability_view(events, window=window, interval=60 * MIN, tz=BERLIN) == "0200"
