"""HTTP helpers shared by the service's outbound clients: the connector's and the Graph source's."""

from __future__ import annotations

import datetime as dt
from email.utils import parsedate_to_datetime

import httpx


def retry_after_s(response: httpx.Response, *, now: dt.datetime) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())
