from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from bookingcache.domain.timezones import is_valid_time_zone, resolve_time_zone
from bookingcache.errors import InvalidInput


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Europe/Berlin", "Europe/Berlin"),
        ("UTC", "UTC"),
        ("America/New_York", "America/New_York"),
        ("W. Europe Standard Time", "Europe/Berlin"),
        ("Eastern Standard Time", "America/New_York"),
        ("GMT Standard Time", "Europe/London"),
        ("Tokyo Standard Time", "Asia/Tokyo"),
        ("europe/berlin", "Europe/Berlin"),
        ("w. europe standard time", "Europe/Berlin"),
    ],
)
def test_iana_and_windows_names_resolve(name: str, key: str) -> None:
    zone = resolve_time_zone(name)
    assert zone == ZoneInfo(key)
    assert is_valid_time_zone(name)


def test_windows_zone_follows_its_iana_rules() -> None:
    zone = resolve_time_zone("W. Europe Standard Time")
    summer = dt.datetime(2026, 7, 1, 12, tzinfo=zone)
    winter = dt.datetime(2026, 1, 1, 12, tzinfo=zone)
    assert summer.utcoffset() == dt.timedelta(hours=2)
    assert winter.utcoffset() == dt.timedelta(hours=1)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Mars/Olympus_Mons",
        "Europe",
        "../etc/passwd",
        "/etc/localtime",
        "localtime",
        "Factory",
        "a\x00b",
        "W. Europe Standard",
        "x" * 5000,
    ],
)
def test_bad_names_are_refused_by_name(name: str) -> None:
    assert not is_valid_time_zone(name)
    with pytest.raises(InvalidInput, match="unknown time zone"):
        resolve_time_zone(name)


def test_error_names_the_zone() -> None:
    with pytest.raises(InvalidInput, match="Mars/Olympus_Mons"):
        resolve_time_zone("Mars/Olympus_Mons")


def test_a_name_that_is_not_text_is_refused() -> None:
    assert not is_valid_time_zone(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="unknown time zone"):
        resolve_time_zone(42)  # type: ignore[arg-type]
