"""HTTP helpers shared by the service's outbound clients: the connector's and the Graph source's."""

from __future__ import annotations

import datetime as dt
from email.utils import parsedate_to_datetime

import httpx
from pydantic import ValidationError


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


def schema_problems(exc: ValidationError, *, most: int = 3) -> str:
    """Where an answer failed its schema and how (``subscriptions.0.mailbox: missing``), without
    the values it held."""
    found = [
        f"{'.'.join(str(part) for part in error['loc']) or 'the body'}: {error['type']}"
        for error in exc.errors(include_url=False, include_input=False)
    ]
    more = f" (and {len(found) - most} more)" if len(found) > most else ""
    return "; ".join(found[:most]) + more
