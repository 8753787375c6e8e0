"""Instants as the answers write them: UTC with ``Z``, and only slot boundaries kept.

A calendar's last sync is a new instant at every refresh; answers write it too. Keeping every
instant ever formatted grew an API process by about 1.5 MB a minute under 100 changes a second,
until the cache was full (docs/benchmarks.md, "The API's memory in the soak")."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from bookingcache.api import answers


def test_instants_are_written_in_utc_with_z() -> None:
    berlin = dt.datetime(2026, 3, 29, 3, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    assert answers.utc_text(berlin) == "2026-03-29T01:30:00Z"
    synced = dt.datetime(2026, 3, 29, 1, 30, 5, 123456, tzinfo=dt.UTC)
    assert answers.utc_text(synced) == "2026-03-29T01:30:05.123456Z"


def test_only_whole_seconds_are_kept() -> None:
    start = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
    kept = answers._kept_utc_text
    before = kept.cache_info().currsize
    for step in range(1, 2001):  # a refresh's sync instant each
        answers.utc_text(start + dt.timedelta(microseconds=step * 1_037))
    assert kept.cache_info().currsize == before
    boundary = start + dt.timedelta(days=400, minutes=15)
    for _ in range(3):
        answers.utc_text(boundary)
    assert kept.cache_info().currsize <= before + 1
    assert kept.cache_info().maxsize is not None
