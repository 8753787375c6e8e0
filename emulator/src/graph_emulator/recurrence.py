"""Expansion of Graph ``patternedRecurrence`` into occurrence dates.

Dates are computed in the event's own time zone and combined with the series' local start time,
so a 09:00 Berlin meeting stays 09:00 Berlin across daylight-saving changes.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterator
from typing import Any

from graph_emulator.errors import GraphError

DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
INDEXES = {"first": 0, "second": 1, "third": 2, "fourth": 3, "last": -1}
PATTERNS = {
    "daily",
    "weekly",
    "absoluteMonthly",
    "relativeMonthly",
    "absoluteYearly",
    "relativeYearly",
}
RANGES = {"endDate", "noEnd", "numbered"}
# Guards against a malformed series expanding forever.
_MAX_STEPS = 200_000


def invalid(message: str) -> GraphError:
    return GraphError(400, "ErrorInvalidRecurrence", message)


def _date(value: Any, name: str) -> dt.date:
    if not isinstance(value, str):
        raise invalid(f"Recurrence property '{name}' must be a date.")
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError as exc:
        raise invalid(f"Recurrence property '{name}' is not a valid date: '{value}'.") from exc


def _whole(value: Any, name: str) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid(f"The recurrence property '{name}' must be an integer.")
    return value


def normalize(recurrence: Any, *, start_date: dt.date, zone_name: str) -> dict[str, Any]:
    """Validate a request's ``recurrence`` and return it in Graph's full response shape."""
    if not isinstance(recurrence, dict):
        raise invalid("The recurrence must be an object with 'pattern' and 'range'.")
    pattern = recurrence.get("pattern")
    rng = recurrence.get("range")
    if not isinstance(pattern, dict) or not isinstance(rng, dict):
        raise invalid("The recurrence must have both 'pattern' and 'range'.")
    kind = pattern.get("type")
    if not isinstance(kind, str) or kind not in PATTERNS:
        raise invalid(f"The recurrence pattern type '{kind}' is not valid.")
    interval = pattern.get("interval", 1)
    if not isinstance(interval, int) or isinstance(interval, bool) or not 1 <= interval <= 999:
        raise invalid("The recurrence interval must be an integer from 1 to 999.")
    days = pattern.get("daysOfWeek") or []
    if not isinstance(days, list) or any(str(d).lower() not in DAYS for d in days):
        raise invalid("The recurrence daysOfWeek contains an invalid day.")
    days = [str(d).lower() for d in days]
    first_day = str(pattern.get("firstDayOfWeek") or "sunday").lower()
    if first_day not in DAYS:
        raise invalid("The recurrence firstDayOfWeek is invalid.")
    index = str(pattern.get("index") or "first").lower()
    if index not in INDEXES:
        raise invalid("The recurrence index is invalid.")
    month = _whole(pattern.get("month"), "month")
    day_of_month = _whole(pattern.get("dayOfMonth"), "dayOfMonth")
    if kind in ("weekly", "relativeMonthly", "relativeYearly") and not days:
        raise invalid(f"A {kind} recurrence needs daysOfWeek.")
    if kind in ("absoluteMonthly", "absoluteYearly") and not 1 <= day_of_month <= 31:
        raise invalid(f"A {kind} recurrence needs dayOfMonth from 1 to 31.")
    if kind in ("absoluteYearly", "relativeYearly") and not 1 <= month <= 12:
        raise invalid(f"A {kind} recurrence needs month from 1 to 12.")
    range_type = rng.get("type")
    if not isinstance(range_type, str) or range_type not in RANGES:
        raise invalid(f"The recurrence range type '{range_type}' is not valid.")
    range_start = _date(rng.get("startDate") or start_date.isoformat(), "startDate")
    end_date = "0001-01-01"
    count = 0
    if range_type == "endDate":
        end = _date(rng.get("endDate"), "endDate")
        if end < range_start:
            raise invalid("The recurrence endDate is before its startDate.")
        end_date = end.isoformat()
    elif range_type == "numbered":
        given = rng.get("numberOfOccurrences")
        if not isinstance(given, int) or isinstance(given, bool) or given < 1:
            raise invalid("A numbered recurrence needs numberOfOccurrences of at least 1.")
        count = given
    return {
        "pattern": {
            "type": kind,
            "interval": interval,
            "month": month,
            "dayOfMonth": day_of_month,
            "daysOfWeek": days,
            "firstDayOfWeek": first_day,
            "index": index,
        },
        "range": {
            "type": range_type,
            "startDate": range_start.isoformat(),
            "endDate": end_date,
            "recurrenceTimeZone": rng.get("recurrenceTimeZone") or zone_name,
            "numberOfOccurrences": count,
        },
    }


def _add_months(year: int, month: int, months: int) -> tuple[int, int]:
    total = year * 12 + (month - 1) + months
    return total // 12, total % 12 + 1


def _relative_day(year: int, month: int, days: list[str], index: str) -> dt.date | None:
    wanted = {DAYS.index(d) for d in days}
    _, length = calendar.monthrange(year, month)
    matches = [
        dt.date(year, month, d)
        for d in range(1, length + 1)
        if dt.date(year, month, d).weekday() in wanted
    ]
    if not matches:
        return None
    position = INDEXES[index]
    if position >= len(matches):
        return None
    return matches[position]


def _absolute_day(year: int, month: int, day: int) -> dt.date:
    # Exchange moves the 29th-31st to the month's last day when the month is shorter.
    _, length = calendar.monthrange(year, month)
    return dt.date(year, month, min(day, length))


def _candidates(recurrence: dict[str, Any]) -> Iterator[dt.date]:
    """Dates matching the pattern from the range start on, in order, without the range end."""
    pattern = recurrence["pattern"]
    start = dt.date.fromisoformat(recurrence["range"]["startDate"])
    kind = pattern["type"]
    interval = pattern["interval"]
    if kind == "daily":
        day = start
        while True:
            yield day
            day += dt.timedelta(days=interval)
    elif kind == "weekly":
        first = DAYS.index(pattern["firstDayOfWeek"])
        week_start = start - dt.timedelta(days=(start.weekday() - first) % 7)
        wanted = sorted(((DAYS.index(d) - first) % 7) for d in pattern["daysOfWeek"])
        while True:
            for offset in wanted:
                day = week_start + dt.timedelta(days=offset)
                if day >= start:
                    yield day
            week_start += dt.timedelta(weeks=interval)
    elif kind in ("absoluteMonthly", "relativeMonthly"):
        year, month = start.year, start.month
        while True:
            if kind == "absoluteMonthly":
                found: dt.date | None = _absolute_day(year, month, pattern["dayOfMonth"])
            else:
                found = _relative_day(year, month, pattern["daysOfWeek"], pattern["index"])
            if found is not None and found >= start:
                yield found
            year, month = _add_months(year, month, interval)
    else:
        year = start.year
        while True:
            if kind == "absoluteYearly":
                found = _absolute_day(year, pattern["month"], pattern["dayOfMonth"])
            else:
                found = _relative_day(
                    year, pattern["month"], pattern["daysOfWeek"], pattern["index"]
                )
            if found is not None and found >= start:
                yield found
            year += interval


def occurrence_dates(recurrence: dict[str, Any], *, until: dt.date) -> Iterator[dt.date]:
    """Every occurrence date of the series up to and including ``until`` (local dates)."""
    rng = recurrence["range"]
    end = dt.date.fromisoformat(rng["endDate"]) if rng["type"] == "endDate" else None
    remaining = rng["numberOfOccurrences"] if rng["type"] == "numbered" else None
    for steps, day in enumerate(_candidates(recurrence)):
        if day > until or (end is not None and day > end) or steps > _MAX_STEPS:
            return
        if remaining is not None:
            if remaining <= 0:
                return
            remaining -= 1
        yield day
