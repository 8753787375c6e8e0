"""Time zone names as Graph accepts them: Windows names (``W. Europe Standard Time``) and IANA
names, both mapped to a ``ZoneInfo``; and the ``dateTimeTimeZone`` wire format."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tzlocal.windows_tz import tz_win, win_tz

from graph_emulator.errors import GraphError

UTC = ZoneInfo("UTC")


def find_zone(name: str) -> ZoneInfo | None:
    """The zone for a Windows or IANA name, or None if Graph would not know it."""
    name = name.strip()
    if not name:
        return None
    iana = win_tz.get(name)
    if iana is not None:
        return ZoneInfo(iana)
    if name.upper() in ("UTC", "Z", "ETC/UTC", "GMT"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a name that is a folder of the zone database ("Pacific", "America").
        return None


def require_zone(name: str) -> ZoneInfo:
    zone = find_zone(name)
    if zone is None:
        raise GraphError(
            400,
            "TimeZoneNotSupportedException",
            f"A valid TimeZone value must be specified. The following TimeZone value is not "
            f"supported: '{name}'.",
        )
    return zone


def windows_name(iana: str) -> str:
    if iana in ("UTC", "Etc/UTC"):
        return "UTC"
    return tz_win.get(iana, iana)


def format_local(value: dt.datetime) -> str:
    """Graph's ``dateTime``: local wall time with 7 fractional digits and no offset."""
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "0"


def parse_local(value: str) -> dt.datetime:
    """A ``dateTime`` string from a request body; an offset, if present, is honoured."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Python accepts at most 6 fractional digits; Graph writes 7.
    if "." in text:
        head, _, frac = text.partition(".")
        offset = ""
        for sign in ("+", "-"):
            if sign in frac:
                frac, _, rest = frac.partition(sign)
                offset = sign + rest
                break
        text = f"{head}.{frac[:6]}{offset}"
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise GraphError(
            400, "UnableToDeserializePostBody", f"Cannot convert '{value}' to a date and time."
        ) from exc


def to_wire(instant: dt.datetime, zone: ZoneInfo, zone_name: str) -> dict[str, str]:
    return {"dateTime": format_local(instant.astimezone(zone)), "timeZone": zone_name}


def parse_query_instant(value: str, name: str) -> dt.datetime:
    """``startDateTime``/``endDateTime``: ISO 8601, offset honoured, no offset means UTC."""
    # An unencoded "+" in an offset arrives as a space; Graph rejects that, and so do we.
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise GraphError(
            400,
            "ErrorInvalidParameter",
            f"The value of parameter '{name[0].upper()}{name[1:]}' is invalid.",
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)
