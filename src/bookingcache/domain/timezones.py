"""Room time zones: IANA names, and the Windows names Exchange and Graph use.

Graph reports zones such as ``"W. Europe Standard Time"``; the mapping to IANA comes from the
CLDR table shipped with ``tzlocal``.
"""

from __future__ import annotations

import functools
import zoneinfo

from tzlocal.windows_tz import win_tz

from bookingcache.errors import InvalidInput

# Present in the system zone database but meaning "whatever this host is set to" or nothing at all.
_HOST_DEPENDENT = frozenset({"localtime", "posixrules", "Factory"})

_MAX_NAME_LENGTH = 128


@functools.cache
def _iana_names() -> dict[str, str]:
    """Every known IANA key, looked up case-insensitively."""
    names = zoneinfo.available_timezones() - _HOST_DEPENDENT
    return {name.casefold(): name for name in names}


@functools.cache
def _windows_names() -> dict[str, str]:
    return {name.casefold(): iana for name, iana in win_tz.items()}


def _iana_key(name: str) -> str | None:
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME_LENGTH:
        return None
    folded = name.strip().casefold()
    return _iana_names().get(folded) or _windows_names().get(folded)


def resolve_time_zone(name: str) -> zoneinfo.ZoneInfo:
    """The zone called ``name`` (IANA such as ``Europe/Berlin`` or Windows such as
    ``W. Europe Standard Time``, case-insensitive); InvalidInput for anything else."""
    key = _iana_key(name)
    if key is None:
        shown = str(name)
        if len(shown) > _MAX_NAME_LENGTH:
            shown = shown[:_MAX_NAME_LENGTH] + "..."
        raise InvalidInput(f"unknown time zone {shown!r}: use an IANA or Windows zone name")
    return zoneinfo.ZoneInfo(key)


def is_valid_time_zone(name: str) -> bool:
    return _iana_key(name) is not None
