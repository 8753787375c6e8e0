"""The tenant's title policy: what a map may see of an event's subject."""

from __future__ import annotations

import dataclasses

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
