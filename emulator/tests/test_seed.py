"""The demo tenant is seeded relative to the emulator's clock: whatever the day and hour, the
coming seven days hold meetings in every room's working hours, in the room's own time zone."""

from __future__ import annotations

import datetime as dt

import pytest

from graph_emulator.clock import Clock
from graph_emulator.directory import Mailbox
from graph_emulator.expansion import Instance
from graph_emulator.seed import demo_days, seed_demo
from graph_emulator.state import EmulatorState, new_state

UTC = dt.UTC
MOMENTS = {
    "saturday": dt.datetime(2026, 12, 5, 14, 20, tzinfo=UTC),
    "sunday": dt.datetime(2026, 12, 6, 21, 0, tzinfo=UTC),
    "monday": dt.datetime(2026, 12, 7, 6, 30, tzinfo=UTC),
    "friday-evening": dt.datetime(2026, 12, 4, 19, 45, tzinfo=UTC),
    # Already New Year's Day in Berlin, still New Year's Eve in London.
    "new-years-eve": dt.datetime(2026, 12, 31, 23, 30, tzinfo=UTC),
    # Sundays on which Europe's clocks change, just before the change.
    "europe-spring-forward": dt.datetime(2026, 3, 29, 0, 45, tzinfo=UTC),
    "europe-fall-back": dt.datetime(2026, 10, 25, 0, 45, tzinfo=UTC),
}
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def seeded(now: dt.datetime, seed: int = 3) -> EmulatorState:
    state = new_state(seed=seed, clock=Clock(virtual=True, start=now))
    seed_demo(state)
    return state


def working_hours(room: Mailbox, day: dt.date) -> tuple[dt.datetime, dt.datetime] | None:
    """The room's working hours on ``day`` (a date in the room's zone), as aware instants."""
    hours = room.working_hours
    if WEEKDAYS[day.weekday()] not in hours.days_of_week:
        return None
    start = dt.datetime.combine(day, dt.time.fromisoformat(hours.start_time), tzinfo=room.zone)
    end = dt.datetime.combine(day, dt.time.fromisoformat(hours.end_time), tzinfo=room.zone)
    return start, end


def meetings(
    state: EmulatorState, room: Mailbox, start: dt.datetime, end: dt.datetime
) -> list[Instance]:
    """Timed meetings that take place (not cancelled) in [start, end)."""
    return [
        i
        for i in state.calendars.instances(room, start, end)
        if not i.field("isCancelled") and not i.field("isAllDay")
    ]


def check_the_coming_seven_days(moment: dt.datetime) -> None:
    state = seeded(moment)
    end = moment + dt.timedelta(days=7)
    rooms = state.directory.rooms()
    assert len(rooms) == 36
    full_days: dict[str, set[dt.date]] = {}
    busy_rooms: dict[tuple[str, dt.date], int] = {}
    for room in rooms:
        ahead = meetings(state, room, moment, end)
        assert ahead, f"{room.upn} has no meeting in the coming seven days"
        for meeting in ahead:
            local_start = meeting.start.astimezone(room.zone)
            hours = working_hours(room, local_start.date())
            assert hours is not None, f"{room.upn}: a meeting on a {local_start:%A}"
            assert hours[0] <= meeting.start < hours[1], (
                f"{room.upn}: {local_start:%a %H:%M} local is outside working hours"
            )
            assert meeting.end.astimezone(room.zone).date() == local_start.date()
        # Every working day whose working hours lie wholly in the coming seven days.
        day = moment.astimezone(room.zone).date()
        while day <= end.astimezone(room.zone).date():
            hours = working_hours(room, day)
            if hours is not None and moment <= hours[0] and hours[1] <= end:
                full_days.setdefault(room.time_zone, set()).add(day)
                if meetings(state, room, *hours):
                    busy_rooms[room.time_zone, day] = busy_rooms.get((room.time_zone, day), 0) + 1
            day += dt.timedelta(days=1)
    assert set(full_days) == {"Europe/Berlin", "Europe/London"}
    for zone, days in full_days.items():
        # Seven days always hold at least four whole working days.
        assert len(days) >= 4, (zone, sorted(days))
        in_zone = sum(1 for r in rooms if r.time_zone == zone)
        for day in days:
            # Not every room is booked every day, but most are.
            assert busy_rooms.get((zone, day), 0) > in_zone // 2, (zone, day)


@pytest.mark.pinned_dates
@pytest.mark.parametrize("moment", MOMENTS.values(), ids=MOMENTS.keys())
def test_the_coming_seven_days_hold_meetings_in_every_rooms_working_hours(
    moment: dt.datetime,
) -> None:
    check_the_coming_seven_days(moment)


def test_every_hour_of_the_week_has_meetings_ahead() -> None:
    # Seven hours apart, so that over eight days every weekday meets many hours of the day. (Not
    # marked pinned_dates: it covers every hour already, on the emulator's own pinned clock.)
    start = dt.datetime(2026, 11, 29, 0, 10, tzinfo=UTC)
    for step in range(8 * 24 // 7 + 1):
        check_the_coming_seven_days(start + dt.timedelta(hours=7 * step))


@pytest.mark.pinned_dates
@pytest.mark.parametrize(
    ("now", "first", "last"),
    [
        # Saturday: this week's working days and all of the coming week's.
        (MOMENTS["saturday"], dt.date(2026, 11, 30), dt.date(2026, 12, 11)),
        # Monday morning: this week and Monday of the next.
        (MOMENTS["monday"], dt.date(2026, 12, 7), dt.date(2026, 12, 14)),
        # 23:30 UTC on Thursday 31 December is Friday in Berlin: through Friday 8 January.
        (MOMENTS["new-years-eve"], dt.date(2026, 12, 28), dt.date(2027, 1, 8)),
    ],
    ids=["saturday", "monday", "new-years-eve"],
)
def test_demo_days_run_from_this_monday_through_the_coming_seven_days(
    now: dt.datetime, first: dt.date, last: dt.date
) -> None:
    state = seeded(now)
    days = demo_days(now, {r.zone for r in state.directory.rooms()})
    every_day = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
    assert days == [d for d in every_day if d.weekday() < 5]


def fingerprint(state: EmulatorState) -> list[tuple[str, str, str, str]]:
    return [
        (room.upn, e.subject, e.start.isoformat(), e.end.isoformat())
        for room in state.directory.rooms()
        for e in state.calendars.items(room)
    ]


@pytest.mark.pinned_dates
def test_the_same_seed_number_and_clock_give_the_same_tenant() -> None:
    now = MOMENTS["saturday"]
    first, again = seeded(now, seed=5), seeded(now, seed=5)
    assert fingerprint(first) == fingerprint(again)
    assert [a.client_secret for a in first.apps.all()] == [
        a.client_secret for a in again.apps.all()
    ]
    assert fingerprint(seeded(now, seed=6)) != fingerprint(first)
    # A week later the same seed number gives the same rooms with other meetings.
    later = seeded(now + dt.timedelta(days=7), seed=5)
    assert [r.upn for r in later.directory.rooms()] == [r.upn for r in first.directory.rooms()]
    assert fingerprint(later) != fingerprint(first)


@pytest.mark.pinned_dates
def test_the_recurring_series_are_current_and_their_exceptions_lie_ahead() -> None:
    moved_or_cancelled = 0
    for moment in MOMENTS.values():
        state = seeded(moment)
        end = moment + dt.timedelta(days=7)
        rooms = state.directory.rooms()
        masters = {
            room.upn: [e for e in state.calendars.items(room) if e.kind == "seriesMaster"]
            for room in rooms
        }
        # Every third room has exactly one series.
        assert [len(m) for m in masters.values()] == [
            1 if n % 3 == 0 else 0 for n in range(len(rooms))
        ]
        for room in rooms:
            for master in masters[room.upn]:
                # Rooms may replace subjects with the organizer's name: tell them by pattern.
                assert master.recurrence is not None
                pattern = master.recurrence["pattern"]
                assert (pattern["type"], len(pattern["daysOfWeek"])) in {
                    ("weekly", 1),  # weekly planning
                    ("weekly", 5),  # stand-up
                    ("relativeMonthly", 1),  # monthly all-hands prep
                }
                # Each series has occurrences from this month on, so some lie within reach.
                horizon = moment + dt.timedelta(days=40)
                assert [
                    i for i in state.calendars.instances(room, moment, horizon) if i.event is master
                ], f"{room.upn}: {pattern} has no occurrence ahead"
                for original in [*master.cancelled, *master.exceptions]:
                    assert len(pattern["daysOfWeek"]) == 5, "only stand-ups are moved or cancelled"
                    assert moment <= original < end, (room.upn, original)
                    moved_or_cancelled += 1
                for occurrence in master.exceptions.values():
                    local = occurrence.start.astimezone(room.zone)
                    assert local.time() == dt.time(9, 30)
    assert moved_or_cancelled > 0, "some stand-up series have a cancelled and a moved occurrence"
