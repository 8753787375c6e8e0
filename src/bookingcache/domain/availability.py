"""Availability rules: what a room's cached events say about it at an instant and over a window.

Rules (docs/domain.md):

* An event occupies the room unless it is cancelled, shown as ``free``, or a series master (the
  cache keeps occurrences and exceptions expanded; the master only describes the series).
  ``showAs=unknown`` counts as busy, to be safe.
* Where events overlap, the strongest status wins: oof > busy > tentative > workingElsewhere > free.
* All-day events are local dates of the room, placed at local midnight in its time zone.
* A calendar that was never synced, or not within the staleness bound, is ``unknown``.

Every function sorts its input once and sweeps it; results are in UTC.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from bookingcache.domain.events import BasicEvent, EventType, ShowAs
from bookingcache.domain.intervals import Interval, free_slots
from bookingcache.errors import InvalidInput, InvalidWindow

UTC = dt.UTC


class RoomStatus(StrEnum):
    FREE = "free"
    TENTATIVE = "tentative"
    BUSY = "busy"
    OOF = "oof"
    WORKING_ELSEWHERE = "workingElsewhere"
    UNKNOWN = "unknown"


# Ranks order the statuses by strength; a rank of 0 is free.
_FREE, _ELSEWHERE, _TENTATIVE, _BUSY, _OOF = range(5)
_STATUS_BY_RANK = (
    RoomStatus.FREE,
    RoomStatus.WORKING_ELSEWHERE,
    RoomStatus.TENTATIVE,
    RoomStatus.BUSY,
    RoomStatus.OOF,
)
_RANK_BY_SHOW_AS = {
    ShowAs.WORKING_ELSEWHERE: _ELSEWHERE,
    ShowAs.TENTATIVE: _TENTATIVE,
    ShowAs.BUSY: _BUSY,
    ShowAs.UNKNOWN: _BUSY,
    ShowAs.OOF: _OOF,
}
# Statuses that take the room: working elsewhere says the organiser is not here.
_OCCUPYING_RANK = _TENTATIVE

# (start, end, rank) in UTC: the working shape of placed events and of status segments.
_Span = tuple[dt.datetime, dt.datetime, int]


@dataclass(frozen=True, slots=True)
class StatusSegment:
    start: dt.datetime
    end: dt.datetime
    status: RoomStatus


@dataclass(frozen=True, slots=True)
class RoomAvailability:
    status: RoomStatus
    next_change_at: dt.datetime | None
    next_status: RoomStatus | None
    busy: list[Interval]
    free: list[Interval]
    segments: list[StatusSegment]
    stale: bool


# --- single events --------------------------------------------------------------------------


def _event_rank(event: BasicEvent) -> int:
    if event.is_cancelled or event.type == EventType.SERIES_MASTER:
        return _FREE
    return _RANK_BY_SHOW_AS.get(event.show_as, _FREE)


def event_status(event: BasicEvent) -> RoomStatus | None:
    """The status the event gives the room while it runs; None when it never occupies it."""
    rank = _event_rank(event)
    return _STATUS_BY_RANK[rank] if rank else None


def _local_midnight(day: dt.date, tz: dt.tzinfo) -> dt.datetime:
    # fold=0 picks the first midnight when it repeats and the first instant after it when a
    # transition skips it, so the result is always where that local date begins.
    return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(UTC)


def placed_interval(event: BasicEvent, tz: dt.tzinfo) -> Interval:
    """The instants the event covers: timed events as they are; all-day events from local
    midnight of their start date to local midnight of their end date in the room's zone ``tz``.

    All-day dates are read from ``start``/``end`` as stored, without converting them first:
    Graph sends all-day events midnight-to-midnight whatever zone was asked for.
    """
    if event.is_all_day:
        return Interval(
            _local_midnight(event.start.date(), tz), _local_midnight(event.end.date(), tz)
        )
    return Interval(event.start.astimezone(UTC), event.end.astimezone(UTC))


def _spans(events: Iterable[BasicEvent], tz: dt.tzinfo) -> list[_Span]:
    """The occupying events as (start, end, rank), sorted by start; empty ones dropped."""
    spans: list[_Span] = []
    for event in events:
        rank = _event_rank(event)
        if not rank:
            continue
        if event.is_all_day:
            start = _local_midnight(event.start.date(), tz)
            end = _local_midnight(event.end.date(), tz)
        else:
            start = event.start.astimezone(UTC)
            end = event.end.astimezone(UTC)
        if start < end:
            spans.append((start, end, rank))
    spans.sort()
    return spans


def _segments(spans: list[_Span]) -> list[_Span]:
    """Sweep sorted spans into maximal, disjoint segments of constant non-free rank."""
    segments: list[_Span] = []
    # Rooms rarely double-book: without overlaps the spans already are the segments, save
    # joining touching neighbours of equal rank.
    if all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1)):
        for start, end, rank in spans:
            if segments and segments[-1][1] == start and segments[-1][2] == rank:
                segments[-1] = (segments[-1][0], end, rank)
            else:
                segments.append((start, end, rank))
        return segments

    points: list[tuple[dt.datetime, int]] = []
    for start, end, rank in spans:
        points.append((start, rank))
        points.append((end, -rank))
    points.sort(key=lambda point: point[0])
    counts = [0] * 5
    current = _FREE
    opened = points[0][0]
    index, total = 0, len(points)
    while index < total:
        instant = points[index][0]
        while index < total and points[index][0] == instant:
            delta = points[index][1]
            if delta > 0:
                counts[delta] += 1
            else:
                counts[-delta] -= 1
            index += 1
        top = _OOF
        while top and not counts[top]:
            top -= 1
        if top != current:
            if current:
                segments.append((opened, instant, current))
            current, opened = top, instant
    return segments


def _clipped(segments: list[_Span], window: Interval) -> list[_Span]:
    first = bisect.bisect_right(segments, window.start, key=lambda segment: segment[1])
    clipped: list[_Span] = []
    for start, end, rank in segments[first:]:
        if start >= window.end:
            break
        clipped.append((max(start, window.start), min(end, window.end), rank))
    return clipped


def _utc(window: Interval) -> Interval:
    if window.start.tzinfo is UTC and window.end.tzinfo is UTC:
        return window
    return Interval(window.start.astimezone(UTC), window.end.astimezone(UTC))


# --- status now and next --------------------------------------------------------------------


def _rank_at(segments: list[_Span], at: dt.datetime) -> int:
    index = bisect.bisect_right(segments, at, key=lambda segment: segment[0]) - 1
    if index >= 0 and at < segments[index][1]:
        return segments[index][2]
    return _FREE


def _next_change(
    segments: list[_Span], at: dt.datetime, until: dt.datetime
) -> tuple[dt.datetime, RoomStatus] | None:
    # Segments are maximal, so every segment boundary after ``at`` is a change of status.
    index = bisect.bisect_right(segments, at, key=lambda segment: segment[1])
    if index == len(segments):
        return None
    start, end, rank = segments[index]
    if start > at:
        instant, new_rank = start, rank
    else:
        following = segments[index + 1] if index + 1 < len(segments) else None
        instant = end
        new_rank = following[2] if following is not None and following[0] == end else _FREE
    if instant > until:
        return None
    return instant, _STATUS_BY_RANK[new_rank]


def status_at(events: Sequence[BasicEvent], *, at: dt.datetime, tz: dt.tzinfo) -> RoomStatus:
    """The room's status at the instant ``at`` from its events (never ``unknown``)."""
    at = at.astimezone(UTC)
    top = _FREE
    for event in events:
        rank = _event_rank(event)
        if rank > top:
            interval = placed_interval(event, tz)
            if interval.start <= at < interval.end:
                top = rank
    return _STATUS_BY_RANK[top]


def next_change(
    events: Sequence[BasicEvent], *, at: dt.datetime, tz: dt.tzinfo, until: dt.datetime
) -> tuple[dt.datetime, RoomStatus] | None:
    """The first instant after ``at``, no later than ``until``, where the status differs from
    the status at ``at``, with the status from then on; None when it holds until ``until``."""
    return _next_change(_segments(_spans(events, tz)), at.astimezone(UTC), until.astimezone(UTC))


# --- over a window --------------------------------------------------------------------------


def timeline(
    events: Iterable[BasicEvent], *, window: Interval, tz: dt.tzinfo
) -> list[StatusSegment]:
    """The window cut into maximal segments of constant status; free stretches are left out."""
    segments = _clipped(_segments(_spans(events, tz)), _utc(window))
    return [StatusSegment(start, end, _STATUS_BY_RANK[rank]) for start, end, rank in segments]


def _busy(segments: list[_Span]) -> list[Interval]:
    busy: list[Interval] = []
    start: dt.datetime | None = None
    end = dt.datetime.min.replace(tzinfo=UTC)
    for seg_start, seg_end, rank in segments:
        if rank < _OCCUPYING_RANK:
            continue
        if start is not None and seg_start == end:
            end = seg_end
            continue
        if start is not None:
            busy.append(Interval(start, end))
        start, end = seg_start, seg_end
    if start is not None:
        busy.append(Interval(start, end))
    return busy


def busy_intervals(
    events: Iterable[BasicEvent], *, window: Interval, tz: dt.tzinfo
) -> list[Interval]:
    """Merged stretches of the window where the room is taken (tentative, busy or oof)."""
    return _busy(_clipped(_segments(_spans(events, tz)), _utc(window)))


_DIGIT_BY_RANK = {_FREE: "0", _TENTATIVE: "1", _BUSY: "2", _OOF: "3"}


def availability_view(
    events: Iterable[BasicEvent],
    *,
    window: Interval,
    interval: dt.timedelta,
    tz: dt.tzinfo,
    working_elsewhere_digit: str = "0",
) -> str:
    """Graph getSchedule's ``availabilityView``: one digit per ``interval`` from the window start
    (a last, partial slot counts), the strongest status touching any part of the slot:
    ``3`` oof, ``2`` busy, ``1`` tentative, ``0`` free; working elsewhere is
    ``working_elsewhere_digit`` (``0`` in current Graph, ``4`` in its older documentation)."""
    if working_elsewhere_digit not in ("0", "4"):
        raise InvalidInput("working_elsewhere_digit must be '0' or '4'")
    if interval <= dt.timedelta(0):
        raise InvalidWindow("the availability view interval must be positive")
    window = _utc(window)
    origin = window.start
    slots = -((origin - window.end) // interval)
    ranks = bytearray(slots)
    for start, end, rank in _clipped(_segments(_spans(events, tz)), window):
        first = (start - origin) // interval
        last = -((origin - end) // interval)  # exclusive: the slot holding ``end`` if partial
        for slot in range(first, last):
            if ranks[slot] < rank:
                ranks[slot] = rank
    table = bytearray(range(256))
    for rank, digit in (*_DIGIT_BY_RANK.items(), (_ELSEWHERE, working_elsewhere_digit)):
        table[rank] = ord(digit)
    return ranks.translate(table).decode("ascii")


# --- the whole answer for one room ----------------------------------------------------------


def is_stale(last_success_at: dt.datetime | None, *, now: dt.datetime, bound: dt.timedelta) -> bool:
    """True when the calendar was never synced or its last successful sync is over ``bound`` old."""
    return last_success_at is None or now - last_success_at > bound


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
    window = _utc(window)
    now = now.astimezone(UTC)
    segments = _segments(_spans(events, tz))
    stale = is_stale(last_success_at, now=now, bound=staleness_bound)
    status: RoomStatus = RoomStatus.UNKNOWN
    change: tuple[dt.datetime, RoomStatus] | None = None
    if not stale:
        status = _STATUS_BY_RANK[_rank_at(segments, now)]
        change = _next_change(segments, now, window.end)
    in_window = _clipped(segments, window)
    busy = _busy(in_window)
    return RoomAvailability(
        status=status,
        next_change_at=change[0] if change else None,
        next_status=change[1] if change else None,
        busy=busy,
        free=free_slots(busy, window=window, min_length=min_free),
        segments=[StatusSegment(s, e, _STATUS_BY_RANK[rank]) for s, e, rank in in_window],
        stale=stale,
    )


# --- request validation ---------------------------------------------------------------------


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
