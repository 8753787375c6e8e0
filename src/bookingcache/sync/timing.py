"""Refresh windows and retry delays."""

from __future__ import annotations

import datetime as dt
import random

from bookingcache.domain.timezones import resolve_time_zone
from bookingcache.errors import InvalidInput


def refresh_window(
    now: dt.datetime, time_zone: str, *, days: int, past_days: int = 0
) -> tuple[dt.datetime, dt.datetime]:
    """From the start of the room's local today (minus ``past_days``) to ``days`` ahead, as UTC
    instants. Both ends are local midnights, so a window only moves once a day and a delta
    token stays valid all day."""
    try:
        zone = resolve_time_zone(time_zone)
    except InvalidInput:
        zone = resolve_time_zone("UTC")
    today = now.astimezone(zone).date() - dt.timedelta(days=past_days)
    start = dt.datetime.combine(today, dt.time(), tzinfo=zone)
    end = dt.datetime.combine(today + dt.timedelta(days=days + past_days), dt.time(), tzinfo=zone)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def backoff_s(
    attempts: int, *, base_s: float, max_s: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with jitter for the ``attempts``-th failure (1-based): half of the
    exponential step is fixed and half random, so retries spread out but never come early."""
    step = min(max_s, base_s * float(2 ** max(0, attempts - 1)))
    source: random.Random = rng if rng is not None else random.Random()  # noqa: S311
    jitter: float = source.uniform(0, step / 2)
    return step / 2 + jitter
