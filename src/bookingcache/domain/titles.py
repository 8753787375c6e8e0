"""The tenant's title policy: what a map may see of an event's subject, and what the service
keeps of it at all.

A title the policy withholds is dropped before the event is stored (``withhold_titles``), so a
``hide`` tenant's subjects are never written anywhere; reading applies the policy again
(``displayed_title``), which also covers events stored before the policy was tightened."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from bookingcache.domain.events import BasicEvent, Sensitivity
from bookingcache.domain.tenancy import TitlePolicy

BUSY_TITLE = "Busy"
PRIVATE_TITLE = "Private"

_PRIVATE_SENSITIVITIES = frozenset({Sensitivity.PRIVATE, Sensitivity.CONFIDENTIAL})


def displayed_title(event: BasicEvent, policy: TitlePolicy) -> str | None:
    """``show``: the title as cached; ``hide``: "Busy" for every event; ``hide_private``:
    "Private" for private and confidential events, the title otherwise."""
    if policy == TitlePolicy.HIDE:
        return BUSY_TITLE
    if policy == TitlePolicy.HIDE_PRIVATE and event.sensitivity in _PRIVATE_SENSITIVITIES:
        return PRIVATE_TITLE
    return event.title


def apply_title_policy(event: BasicEvent, policy: TitlePolicy) -> BasicEvent:
    """A copy of ``event`` carrying the title the policy lets through."""
    title = displayed_title(event, policy)
    if title == event.title:
        return event
    return dataclasses.replace(event, title=title)


def stored_title(event: BasicEvent, policy: TitlePolicy) -> str | None:
    """What the service may keep of the event's title: ``None`` where the policy withholds it
    (``hide``: every title; ``hide_private``: private and confidential events' titles)."""
    if policy == TitlePolicy.HIDE:
        return None
    if policy == TitlePolicy.HIDE_PRIVATE and event.sensitivity in _PRIVATE_SENSITIVITIES:
        return None
    return event.title


def withhold_titles(events: Sequence[BasicEvent], policy: TitlePolicy) -> list[BasicEvent]:
    """The events as they may be stored: each without the title the policy withholds."""
    kept = []
    for event in events:
        title = stored_title(event, policy)
        kept.append(event if title == event.title else dataclasses.replace(event, title=title))
    return kept
