"""A room's cached events compiled into status segments, and the queries answered from them.

Rules (docs/domain.md):

* An event occupies the room unless it is cancelled, shown as ``free``, or a series master (the
  cache keeps occurrences and exceptions expanded; the master only describes the series).
  ``showAs=unknown`` counts as busy, to be safe.
* Where events overlap, the strongest status wins: oof > busy > tentative > workingElsewhere > free.
* All-day events are local dates of the room, placed at local midnight in its time zone.

``RoomSchedule.from_events`` sorts and sweeps the events once; every query after that is a
binary search plus a walk over the segments it returns. All instants it returns are UTC.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from bookingcache.domain.events import BasicEvent, EventType, ShowAs
from bookingcache.domain.intervals import Interval
from bookingcache.errors import InvalidInput, InvalidWindow

UTC = dt.UTC


class RoomStatus(StrEnum):
    FREE = "free"
    TENTATIVE = "tentative"
    BUSY = "busy"
    OOF = "oof"
    WORKING_ELSEWHERE = "workingElsewhere"
    UNKNOWN = "unknown"


# Ranks order the statuses by strength; rank 0 is free.
FREE_RANK, ELSEWHERE_RANK, TENTATIVE_RANK, BUSY_RANK, OOF_RANK = range(5)
STATUS_BY_RANK = (
    RoomStatus.FREE,
    RoomStatus.WORKING_ELSEWHERE,
    RoomStatus.TENTATIVE,
    RoomStatus.BUSY,
    RoomStatus.OOF,
)
_RANK_BY_SHOW_AS: dict[str, int] = {
    ShowAs.WORKING_ELSEWHERE: ELSEWHERE_RANK,
    ShowAs.TENTATIVE: TENTATIVE_RANK,
    ShowAs.BUSY: BUSY_RANK,
    ShowAs.UNKNOWN: BUSY_RANK,
    ShowAs.OOF: OOF_RANK,
}
# Working elsewhere says the organiser is not here, so it leaves the room usable.
OCCUPYING_RANK = TENTATIVE_RANK
_SERIES_MASTER: str = EventType.SERIES_MASTER
_DIGIT_BY_RANK = {FREE_RANK: "0", TENTATIVE_RANK: "1", BUSY_RANK: "2", OOF_RANK: "3"}

# (start, end, rank) in UTC: placed events, and status segments.
Span = tuple[dt.datetime, dt.datetime, int]


@dataclass(frozen=True, slots=True)
class StatusSegment:
    start: dt.datetime
    end: dt.datetime
    status: RoomStatus


def event_rank(event: BasicEvent) -> int:
    if event.is_cancelled or event.type == _SERIES_MASTER:
        return FREE_RANK
    return _RANK_BY_SHOW_AS.get(event.show_as, FREE_RANK)


def event_status(event: BasicEvent) -> RoomStatus | None:
    """The status the event gives the room while it runs; None when it never occupies it."""
    rank = event_rank(event)
    return STATUS_BY_RANK[rank] if rank else None


def local_midnight(day: dt.date, tz: dt.tzinfo) -> dt.datetime:
    # fold=0 picks the first midnight when it repeats and the first instant after it when a
    # transition skips it, so the result is always where that local date begins.
    return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(UTC)


def placed_bounds(event: BasicEvent, tz: dt.tzinfo) -> tuple[dt.datetime, dt.datetime]:
    if event.is_all_day:
        return local_midnight(event.start.date(), tz), local_midnight(event.end.date(), tz)
    start, end = event.start, event.end
    if start.tzinfo is not UTC:
        start = start.astimezone(UTC)
    if end.tzinfo is not UTC:
        end = end.astimezone(UTC)
    return start, end


def placed_interval(event: BasicEvent, tz: dt.tzinfo) -> Interval:
    """The instants the event covers: timed events as they are; all-day events from local
    midnight of their start date to local midnight of their end date in the room's zone ``tz``.

    All-day dates are read from ``start``/``end`` as stored, without converting them first:
    Graph sends all-day events midnight-to-midnight whatever zone was asked for.
    """
    start, end = placed_bounds(event, tz)
    return Interval(start, end)


def _sweep(spans: list[Span]) -> list[Span]:
    """Sorted spans into maximal, disjoint segments of constant non-free rank."""
    segments: list[Span] = []
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
    current = FREE_RANK
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
        top = OOF_RANK
        while top and not counts[top]:
            top -= 1
        if top != current:
            if current:
                segments.append((opened, instant, current))
            current, opened = top, instant
    return segments


def _utc(window: Interval) -> tuple[dt.datetime, dt.datetime]:
    start, end = window.start, window.end
    if start.tzinfo is not UTC:
        start = start.astimezone(UTC)
    if end.tzinfo is not UTC:
        end = end.astimezone(UTC)
    return start, end


def occupied_stretches(spans: list[Span]) -> list[tuple[dt.datetime, dt.datetime]]:
    """The stretches of sorted, disjoint spans that take the room, touching ones joined."""
    merged: list[tuple[dt.datetime, dt.datetime]] = []
    for start, end, rank in spans:
        if rank < OCCUPYING_RANK:
            continue
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def free_gaps(
    occupied: list[tuple[dt.datetime, dt.datetime]], *, window: Interval, min_length: dt.timedelta
) -> list[Interval]:
    """The gaps of ``window`` around sorted, disjoint occupied stretches inside it that last at
    least ``min_length`` (and are never empty)."""
    cursor, window_end = _utc(window)
    slots: list[Interval] = []
    for start, end in occupied:
        if start > cursor and start - cursor >= min_length:
            slots.append(Interval(cursor, start))
        cursor = end
    if window_end > cursor and window_end - cursor >= min_length:
        slots.append(Interval(cursor, window_end))
    return slots


@functools.cache
def _digit_table(working_elsewhere_digit: str) -> bytes:
    table = bytearray(range(256))
    for rank, digit in (*_DIGIT_BY_RANK.items(), (ELSEWHERE_RANK, working_elsewhere_digit)):
        table[rank] = ord(digit)
    return bytes(table)


class RoomSchedule:
    """A room's statuses over time, compiled once from its events and its time zone.

    Immutable after construction, so a read model may keep one per calendar and answer many
    requests from it until the calendar's events change. Build it with ``from_events``; the
    constructor takes segments already sorted, disjoint and maximal.
    """

    __slots__ = ("_ends", "_starts", "segments")

    def __init__(self, segments: list[Span]) -> None:
        self.segments: tuple[Span, ...] = tuple(segments)
        self._starts = [segment[0] for segment in segments]
        self._ends = [segment[1] for segment in segments]

    @classmethod
    def from_events(cls, events: Iterable[BasicEvent], *, tz: dt.tzinfo) -> RoomSchedule:
        spans: list[Span] = []
        ranks = _RANK_BY_SHOW_AS
        for event in events:
            if event.is_cancelled or event.type == _SERIES_MASTER:
                continue
            rank = ranks.get(event.show_as, FREE_RANK)
            if not rank:
                continue
            start, end = placed_bounds(event, tz)
            if start < end:
                spans.append((start, end, rank))
        spans.sort()
        return cls(_sweep(spans))

    def rank_at(self, at: dt.datetime) -> int:
        index = bisect.bisect_right(self._starts, at) - 1
        if index >= 0 and at < self._ends[index]:
            return self.segments[index][2]
        return FREE_RANK

    def status_at(self, at: dt.datetime) -> RoomStatus:
        return STATUS_BY_RANK[self.rank_at(at)]

    def next_change(
        self, at: dt.datetime, *, until: dt.datetime
    ) -> tuple[dt.datetime, RoomStatus] | None:
        """The first instant after ``at`` (no later than ``until``) where the status differs
        from the status at ``at``, with the status from then on."""
        # Segments are maximal, so every segment boundary after ``at`` is a change of status.
        segments = self.segments
        index = bisect.bisect_right(self._ends, at)
        if index == len(segments):
            return None
        start, end, rank = segments[index]
        if start > at:
            instant, new_rank = start, rank
        else:
            instant, new_rank = end, FREE_RANK
            if index + 1 < len(segments) and segments[index + 1][0] == end:
                new_rank = segments[index + 1][2]
        if instant > until:
            return None
        return instant, STATUS_BY_RANK[new_rank]

    def spans_in(self, window: Interval) -> list[Span]:
        """The segments clipped to ``window``."""
        window_start, window_end = _utc(window)
        segments = self.segments
        clipped: list[Span] = []
        for index in range(bisect.bisect_right(self._ends, window_start), len(segments)):
            start, end, rank = segments[index]
            if start >= window_end:
                break
            clipped.append(
                (
                    start if start > window_start else window_start,
                    end if end < window_end else window_end,
                    rank,
                )
            )
        return clipped

    def first_taken(self, start: dt.datetime, until: dt.datetime) -> dt.datetime | None:
        """The first instant of ``[start, until)`` at which the room is taken (tentative, busy
        or oof; working elsewhere leaves it usable), or None when it is not taken there."""
        segments = self.segments
        for index in range(bisect.bisect_right(self._ends, start), len(segments)):
            segment_start, _, rank = segments[index]
            if segment_start >= until:
                break
            if rank >= OCCUPYING_RANK:
                return segment_start if segment_start > start else start
        return None

    def timeline(self, window: Interval) -> list[StatusSegment]:
        """The window cut into maximal segments of constant status; free stretches left out."""
        return [StatusSegment(s, e, STATUS_BY_RANK[rank]) for s, e, rank in self.spans_in(window)]

    def occupied(self, window: Interval) -> list[tuple[dt.datetime, dt.datetime]]:
        """Merged stretches of the window where the room is taken (tentative, busy, oof)."""
        return occupied_stretches(self.spans_in(window))

    def busy_intervals(self, window: Interval) -> list[Interval]:
        return [Interval(start, end) for start, end in self.occupied(window)]

    def free_slots(self, window: Interval, *, min_length: dt.timedelta) -> list[Interval]:
        """Gaps of the window between occupied stretches lasting at least ``min_length``."""
        return free_gaps(self.occupied(window), window=window, min_length=min_length)

    def availability_view(
        self, window: Interval, *, interval: dt.timedelta, working_elsewhere_digit: str = "0"
    ) -> str:
        """Graph getSchedule's ``availabilityView``: one digit per ``interval`` from the window
        start (a last, partial slot counts), the strongest status touching any part of the
        slot: ``3`` oof, ``2`` busy, ``1`` tentative, ``0`` free; working elsewhere is
        ``working_elsewhere_digit`` (``0`` in current Graph, ``4`` in its older documentation)."""
        if working_elsewhere_digit not in ("0", "4"):
            raise InvalidInput("working_elsewhere_digit must be '0' or '4'")
        if interval <= dt.timedelta(0):
            raise InvalidWindow("the availability view interval must be positive")
        origin, window_end = _utc(window)
        ranks = bytearray(-((origin - window_end) // interval))
        for start, end, rank in self.spans_in(window):
            first = (start - origin) // interval
            last = -((origin - end) // interval)  # exclusive; a partly covered slot counts
            for slot in range(first, last):
                if ranks[slot] < rank:
                    ranks[slot] = rank
        return ranks.translate(_digit_table(working_elsewhere_digit)).decode("ascii")
