"""Time as a dependency: aware UTC datetimes and sleeping, both replaceable in tests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


def to_graph_utc(moment: datetime) -> str:
    """Graph and the contract both spell instants as ``YYYY-MM-DDTHH:MM:SSZ``. The year is
    written out here: ``strftime("%Y")`` drops the leading zeros of a year below 1000."""
    utc = moment.astimezone(UTC)
    return f"{utc.year:04d}-{utc:%m-%dT%H:%M:%S}Z"


def parse_instant(text: str) -> datetime:
    """Parse an ISO 8601 instant; a missing offset means UTC (as Graph reads its query times).
    ``ValueError`` for text that is not one, or names no date in UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    # Graph writes seven fractional digits; Python accepts at most six.
    if "." in value:
        head, _, tail = value.partition(".")
        digits = "".join(ch for ch in tail if ch.isdigit())
        rest = tail[len(digits) :]
        value = f"{head}.{digits[:6].ljust(6, '0')}{rest}"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:  # e.g. year 1 east of UTC: year 0 in UTC
        raise ValueError(f"{text!r} is not a date in UTC") from exc
