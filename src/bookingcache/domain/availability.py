"""Availability of a room: its status now, the next change, busy and free time, Graph's
availabilityView, and whether the cached data can be trusted.

The rules live in ``schedule.py`` (docs/domain.md); the functions here compile the events into a
``RoomSchedule`` and ask it. Callers that answer many requests from the same events can keep the
schedule and use ``schedule_availability``. A calendar that was never synced, or not within the
staleness bound, is ``unknown``. Every function accepts events in any order; results are UTC.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bookingcache.domain.events import BasicEvent
from bookingcache.domain.intervals import Interval
from bookingcache.domain.schedule import (
    STATUS_BY_RANK,
    RoomSchedule,
    RoomStatus,
    StatusSegment,
    event_rank,
    event_status,
    free_gaps,
    occupied_stretches,
    placed_bounds,
    placed_interval,
)
from bookingcache.errors import InvalidWindow

__all__ = [
    "RoomAvailability",
    "RoomSchedule",
    "RoomStatus",
    "StatusSegment",
    "availability_view",
    "busy_intervals",
    "event_status",
    "is_stale",
    "next_change",
    "placed_interval",
    "room_availability",
    "schedule_availability",
    "status_at",
    "timeline",
    "validate_view_interval",
    "validate_window",
]

UTC = dt.UTC


@dataclass(frozen=True, slots=True)
class RoomAvailability:
    status: RoomStatus
    next_change_at: dt.datetime | None
    next_status: RoomStatus | None
    busy: list[Interval]
    free: list[Interval]
    segments: list[StatusSegment]
    stale: bool


def status_at(events: Sequence[BasicEvent], *, at: dt.datetime, tz: dt.tzinfo) -> RoomStatus:
    """The room's status at the instant ``at`` from its events (never ``unknown``)."""
    top = 0
    for event in events:
        rank = event_rank(event)
        if rank > top:
            start, end = placed_bounds(event, tz)
            if start <= at < end:
                top = rank
    return STATUS_BY_RANK[top]


def next_change(
    events: Sequence[BasicEvent], *, at: dt.datetime, tz: dt.tzinfo, until: dt.datetime
) -> tuple[dt.datetime, RoomStatus] | None:
    """The first instant after ``at``, no later than ``until``, where the status differs from
    the status at ``at``, with the status from then on; None when it holds until ``until``."""
    return RoomSchedule.from_events(events, tz=tz).next_change(at, until=until)


def timeline(
    events: Iterable[BasicEvent], *, window: Interval, tz: dt.tzinfo
) -> list[StatusSegment]:
    """The window cut into maximal segments of constant status; free stretches are left out."""
    return RoomSchedule.from_events(events, tz=tz).timeline(window)


def busy_intervals(
    events: Iterable[BasicEvent], *, window: Interval, tz: dt.tzinfo
) -> list[Interval]:
    """Merged stretches of the window where the room is taken (tentative, busy or oof);
    working elsewhere does not take it."""
    return RoomSchedule.from_events(events, tz=tz).busy_intervals(window)


def availability_view(
    events: Iterable[BasicEvent],
    *,
    window: Interval,
    interval: dt.timedelta,
    tz: dt.tzinfo,
    working_elsewhere_digit: str = "0",
) -> str:
    """Graph getSchedule's ``availabilityView`` (see ``RoomSchedule.availability_view``)."""
    return RoomSchedule.from_events(events, tz=tz).availability_view(
        window, interval=interval, working_elsewhere_digit=working_elsewhere_digit
    )


def is_stale(last_success_at: dt.datetime | None, *, now: dt.datetime, bound: dt.timedelta) -> bool:
    """True when the calendar was never synced or its last successful sync is over ``bound`` old."""
    return last_success_at is None or now - last_success_at > bound


def schedule_availability(
    schedule: RoomSchedule,
    *,
    now: dt.datetime,
    window: Interval,
    min_free: dt.timedelta,
    last_success_at: dt.datetime | None,
    staleness_bound: dt.timedelta,
) -> RoomAvailability:
    """``room_availability`` from an already compiled schedule."""
    stale = is_stale(last_success_at, now=now, bound=staleness_bound)
    status = RoomStatus.UNKNOWN
    change: tuple[dt.datetime, RoomStatus] | None = None
    if not stale:
        status = schedule.status_at(now)
        change = schedule.next_change(now, until=window.end)
    spans = schedule.spans_in(window)
    occupied = occupied_stretches(spans)
    return RoomAvailability(
        status=status,
        next_change_at=change[0] if change else None,
        next_status=change[1] if change else None,
        busy=[Interval(start, end) for start, end in occupied],
        free=free_gaps(occupied, window=window, min_length=min_free),
        segments=[StatusSegment(start, end, STATUS_BY_RANK[rank]) for start, end, rank in spans],
        stale=stale,
    )


def room_availability(
    events: Iterable[BasicEvent],
    *,
    now: dt.datetime,
    window: Interval,
    tz: dt.tzinfo,
    min_free: dt.timedelta,
    last_success_at: dt.datetime | None,
    staleness_bound: dt.timedelta,
) -> RoomAvailability:
    """Status now, its next change (looked for up to the window's end), busy intervals, free
    slots of at least ``min_free`` and the status segments of the window.

    A stale calendar reports ``unknown`` and no next change; busy and free still come from what
    is cached, so a map can draw them marked as possibly out of date.
    """
    return schedule_availability(
        RoomSchedule.from_events(events, tz=tz),
        now=now,
        window=window,
        min_free=min_free,
        last_success_at=last_success_at,
        staleness_bound=staleness_bound,
    )


def validate_window(start: dt.datetime, end: dt.datetime, *, max_days: int = 62) -> Interval:
    """The window ``[start, end)`` in UTC; InvalidWindow when naive, empty, reversed or longer
    than ``max_days`` days."""
    if start.tzinfo is None or start.utcoffset() is None:
        raise InvalidWindow("start must carry a time zone offset (e.g. 2026-11-24T08:00:00Z)")
    if end.tzinfo is None or end.utcoffset() is None:
        raise InvalidWindow("end must carry a time zone offset (e.g. 2026-11-24T18:00:00Z)")
    if start >= end:
        raise InvalidWindow(f"start ({start.isoformat()}) must be before end ({end.isoformat()})")
    if end - start > dt.timedelta(days=max_days):
        raise InvalidWindow(f"the window is longer than {max_days} days")
    return Interval(start.astimezone(UTC), end.astimezone(UTC))


MIN_VIEW_INTERVAL_MINUTES = 5
MAX_VIEW_INTERVAL_MINUTES = 1440


def validate_view_interval(minutes: int) -> dt.timedelta:
    """The availabilityView slot length; InvalidWindow outside 5..1440 minutes (Graph's range)."""
    if isinstance(minutes, bool) or not isinstance(minutes, int):
        raise InvalidWindow("the interval must be a whole number of minutes")
    if not MIN_VIEW_INTERVAL_MINUTES <= minutes <= MAX_VIEW_INTERVAL_MINUTES:
        raise InvalidWindow(
            f"the interval must be between {MIN_VIEW_INTERVAL_MINUTES} and "
            f"{MAX_VIEW_INTERVAL_MINUTES} minutes, got {minutes}"
        )
    return dt.timedelta(minutes=minutes)
