"""Half-open time intervals ``[start, end)`` and the set operations availability is built from.

Every function accepts intervals in any order and sorts once; results are sorted by start.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Interval:
    """The instants ``start <= t < end``; an interval with ``start == end`` is empty."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("interval bounds must be timezone-aware")
        if self.end < self.start:
            raise ValueError(f"interval ends ({self.end}) before it starts ({self.start})")

    @property
    def is_empty(self) -> bool:
        return self.start == self.end

    def overlaps(self, other: Interval) -> bool:
        """True when the two share at least one instant (touching is not overlapping)."""
        return max(self.start, other.start) < min(self.end, other.end)

    def contains(self, instant: dt.datetime) -> bool:
        return self.start <= instant < self.end

    def duration(self) -> dt.timedelta:
        return self.end - self.start

    def clip(self, window: Interval) -> Interval | None:
        """The part of this interval inside ``window``, or None when they share no instant."""
        start = max(self.start, window.start)
        end = min(self.end, window.end)
        if start >= end:
            return None
        return Interval(start, end)


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """The union as sorted, disjoint intervals; overlapping or touching ones are joined.

    Empty intervals cover nothing and disappear. ``merge(merge(x)) == merge(x)``.
    """
    ordered = sorted(i for i in intervals if i.start < i.end)
    merged: list[Interval] = []
    if not ordered:
        return merged
    start, end = ordered[0].start, ordered[0].end
    for item in ordered[1:]:
        if item.start <= end:
            if item.end > end:
                end = item.end
        else:
            merged.append(Interval(start, end))
            start, end = item.start, item.end
    merged.append(Interval(start, end))
    return merged


def subtract(window: Interval, busy: Iterable[Interval]) -> list[Interval]:
    """The parts of ``window`` that no interval of ``busy`` covers, sorted."""
    gaps: list[Interval] = []
    cursor = window.start
    for item in merge(busy):
        if item.end <= cursor:
            continue
        if item.start >= window.end:
            break
        if item.start > cursor:
            gaps.append(Interval(cursor, item.start))
        cursor = item.end
        if cursor >= window.end:
            break
    if cursor < window.end:
        gaps.append(Interval(cursor, window.end))
    return gaps


def free_slots(
    busy: Iterable[Interval], *, window: Interval, min_length: dt.timedelta
) -> list[Interval]:
    """The gaps of ``window`` between busy intervals that last at least ``min_length``."""
    return [gap for gap in subtract(window, busy) if gap.end - gap.start >= min_length]
