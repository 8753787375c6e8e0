from __future__ import annotations

import datetime as dt

import pytest

from bookingcache.domain.events import BasicEvent, Sensitivity
from bookingcache.domain.tenancy import TitlePolicy
from bookingcache.domain.titles import (
    apply_title_policy,
    displayed_title,
    stored_title,
    withhold_titles,
)

START = dt.datetime(2026, 11, 24, 9, tzinfo=dt.UTC)


def event(sensitivity: Sensitivity, title: str | None = "Board meeting") -> BasicEvent:
    return BasicEvent(
        id="e1",
        start=START,
        end=START + dt.timedelta(hours=1),
        title=title,
        sensitivity=sensitivity,
    )


@pytest.mark.parametrize(
    ("policy", "sensitivity", "expected"),
    [
        (TitlePolicy.SHOW, Sensitivity.NORMAL, "Board meeting"),
        (TitlePolicy.SHOW, Sensitivity.PRIVATE, "Board meeting"),
        (TitlePolicy.SHOW, Sensitivity.CONFIDENTIAL, "Board meeting"),
        (TitlePolicy.HIDE, Sensitivity.NORMAL, "Busy"),
        (TitlePolicy.HIDE, Sensitivity.PERSONAL, "Busy"),
        (TitlePolicy.HIDE, Sensitivity.PRIVATE, "Busy"),
        (TitlePolicy.HIDE_PRIVATE, Sensitivity.NORMAL, "Board meeting"),
        (TitlePolicy.HIDE_PRIVATE, Sensitivity.PERSONAL, "Board meeting"),
        (TitlePolicy.HIDE_PRIVATE, Sensitivity.PRIVATE, "Private"),
        (TitlePolicy.HIDE_PRIVATE, Sensitivity.CONFIDENTIAL, "Private"),
    ],
)
def test_displayed_title(policy: TitlePolicy, sensitivity: Sensitivity, expected: str) -> None:
    assert displayed_title(event(sensitivity), policy) == expected


def test_hide_covers_events_without_a_title() -> None:
    assert displayed_title(event(Sensitivity.NORMAL, title=None), TitlePolicy.HIDE) == "Busy"
    assert displayed_title(event(Sensitivity.NORMAL, title=None), TitlePolicy.SHOW) is None


def test_policy_given_as_its_string_value() -> None:
    assert displayed_title(event(Sensitivity.PRIVATE), TitlePolicy("hide_private")) == "Private"


def test_apply_title_policy_replaces_only_the_title() -> None:
    original = event(Sensitivity.CONFIDENTIAL)
    hidden = apply_title_policy(original, TitlePolicy.HIDE_PRIVATE)
    assert hidden.title == "Private"
    assert hidden.id == original.id
    assert (hidden.start, hidden.end, hidden.sensitivity) == (
        original.start,
        original.end,
        original.sensitivity,
    )
    assert original.title == "Board meeting"
    assert apply_title_policy(original, TitlePolicy.SHOW) == original


@pytest.mark.parametrize(
    ("policy", "sensitivity", "expected"),
    [
        (TitlePolicy.SHOW, Sensitivity.PRIVATE, "Board meeting"),
        (TitlePolicy.HIDE, Sensitivity.NORMAL, None),
        (TitlePolicy.HIDE, Sensitivity.PRIVATE, None),
        (TitlePolicy.HIDE_PRIVATE, Sensitivity.PERSONAL, "Board meeting"),
        (TitlePolicy.HIDE_PRIVATE, Sensitivity.PRIVATE, None),
        (TitlePolicy.HIDE_PRIVATE, Sensitivity.CONFIDENTIAL, None),
    ],
)
def test_stored_title_keeps_nothing_the_policy_withholds(
    policy: TitlePolicy, sensitivity: Sensitivity, expected: str | None
) -> None:
    assert stored_title(event(sensitivity), policy) == expected


def test_withhold_titles_changes_only_titles() -> None:
    normal, private = event(Sensitivity.NORMAL), event(Sensitivity.PRIVATE)
    kept = withhold_titles([normal, private], TitlePolicy.HIDE_PRIVATE)
    assert kept[0] is normal
    assert (kept[1].title, kept[1].sensitivity, kept[1].start) == (
        None,
        Sensitivity.PRIVATE,
        private.start,
    )
    # Read back, the withheld title shows as the policy says.
    assert displayed_title(kept[1], TitlePolicy.HIDE_PRIVATE) == "Private"
