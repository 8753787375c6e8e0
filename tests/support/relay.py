"""The parts of a relay call (the connector contract's ``RelayNotification``) as the connector
sends them."""

from __future__ import annotations

from typing import Any


def wire_event(event_id: str, start: str, end: str, **extra: Any) -> dict[str, Any]:
    """A pushed event with every one of the ten basic fields; ``extra`` replaces or adds."""
    return {
        "id": event_id,
        "start": start,
        "end": end,
        "isAllDay": False,
        "showAs": "busy",
        "isCancelled": False,
        "subject": "Weekly",
        "sensitivity": "normal",
        "type": "singleInstance",
        "seriesMasterId": None,
        **extra,
    }
