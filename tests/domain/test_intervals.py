from __future__ import annotations

import datetime as dt
import itertools
import random
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bookingcache.domain.intervals import Interval, free_slots, merge, subtract

BASE = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)


def at(minutes: int) -> dt.datetime:
    return BASE + minutes * MINUTE


def iv(start: int, end: int) -> Interval:
    return Interval(at(start), at(end))


@st.composite
def intervals(draw: st.DrawFn) -> Interval:
    start = draw(st.integers(0, 600))
    length = draw(st.integers(0, 120))
    return iv(start, start + length)


interval_lists = st.lists(intervals(), max_size=25)


def covered_minutes(items: list[Interval]) -> set[int]:
    """Brute force: the minutes [m, m+1) covered by any interval."""
    minutes: set[int] = set()
    for item in items:
        first = (item.start - BASE) // MINUTE
        last = (item.end - BASE) // MINUTE
        minutes.update(range(first, last))
    return minutes


# --- Interval -------------------------------------------------------------------------------


def test_interval_rejects_naive_and_reversed_bounds() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Interval(dt.datetime(2026, 1, 1), at(0))
    with pytest.raises(ValueError, match="before it starts"):
        iv(10, 5)


def test_overlap_is_half_open() -> None:
    assert iv(0, 10).overlaps(iv(5, 15))
    assert not iv(0, 10).overlaps(iv(10, 20))
    assert not iv(10, 20).overlaps(iv(0, 10))
    assert iv(0, 30).overlaps(iv(10, 20))
    assert not iv(5, 5).overlaps(iv(0, 10))


def test_duration_and_clip() -> None:
    assert iv(10, 70).duration() == dt.timedelta(hours=1)
    assert iv(0, 100).clip(iv(20, 30)) == iv(20, 30)
    assert iv(0, 10).clip(iv(10, 30)) is None


def test_intervals_in_other_zones_compare_by_instant() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    local = Interval(at(60).astimezone(berlin), at(120).astimezone(berlin))
    assert local == iv(60, 120)
    assert merge([local, iv(120, 180)]) == [iv(60, 180)]


# --- merge ----------------------------------------------------------------------------------


def test_merge_joins_overlapping_and_touching() -> None:
    assert merge([iv(30, 40), iv(0, 10), iv(10, 20), iv(35, 50), iv(60, 60)]) == [
        iv(0, 20),
        iv(30, 50),
    ]


def test_merge_of_nothing_is_nothing() -> None:
    assert merge([]) == []


@given(interval_lists)
def test_merge_is_idempotent(items: list[Interval]) -> None:
    once = merge(items)
    assert merge(once) == once


@given(interval_lists, st.randoms(use_true_random=False))
def test_merge_ignores_order(items: list[Interval], rnd: random.Random) -> None:
    shuffled = list(items)
    rnd.shuffle(shuffled)
    assert merge(shuffled) == merge(items)


@given(interval_lists)
def test_merged_intervals_are_sorted_disjoint_and_cover_the_union(items: list[Interval]) -> None:
    merged = merge(items)
    for left, right in itertools.pairwise(merged):
        assert left.end < right.start  # disjoint and not even touching
    assert all(not item.is_empty for item in merged)
    assert covered_minutes(merged) == covered_minutes(items)


# --- subtract / free_slots ------------------------------------------------------------------


def test_subtract_examples() -> None:
    window = iv(0, 100)
    assert subtract(window, []) == [window]
    assert subtract(window, [iv(-10, 10), iv(20, 30), iv(90, 200)]) == [iv(10, 20), iv(30, 90)]
    assert subtract(window, [iv(-10, 200)]) == []
    assert subtract(window, [iv(200, 300), iv(-50, -10)]) == [window]


def test_free_slots_drop_short_gaps() -> None:
    busy = [iv(10, 20), iv(25, 60)]
    assert free_slots(busy, window=iv(0, 100), min_length=dt.timedelta(minutes=10)) == [
        iv(0, 10),
        iv(60, 100),
    ]
    assert free_slots(busy, window=iv(0, 100), min_length=dt.timedelta(minutes=5)) == [
        iv(0, 10),
        iv(20, 25),
        iv(60, 100),
    ]


@given(interval_lists, intervals(), st.integers(0, 90))
def test_free_slots_avoid_busy_and_are_long_enough(
    busy: list[Interval], window: Interval, min_minutes: int
) -> None:
    min_length = min_minutes * MINUTE
    slots = free_slots(busy, window=window, min_length=min_length)
    busy_minutes = covered_minutes(busy)
    window_minutes = covered_minutes([window])
    for slot in slots:
        assert slot.duration() >= min_length
        assert slot.duration() > dt.timedelta(0)
        assert window.start <= slot.start
        assert slot.end <= window.end
        assert not any(slot.overlaps(b) for b in busy)
    for left, right in itertools.pairwise(slots):
        assert left.end < right.start
    # With no minimum, the free slots are exactly the window minus the busy minutes.
    every_gap = free_slots(busy, window=window, min_length=dt.timedelta(0))
    assert covered_minutes(every_gap) == window_minutes - busy_minutes
