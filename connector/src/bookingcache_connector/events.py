"""Basic events: the only event fields that ever leave the customer's tenant.

An allowlist. Each field is copied by name and checked for its type; anything else Graph sends
(body, attendees, organizer, location, attachments, extensions, whatever is added later) is never
looked at, so it cannot leak.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from .clock import parse_instant, to_graph_utc

BASIC_FIELDS = (
    "id",
    "start",
    "end",
    "isAllDay",
    "showAs",
    "isCancelled",
    "subject",
    "sensitivity",
    "type",
    "seriesMasterId",
)
SELECT = ",".join(BASIC_FIELDS)
SHOW_AS = {"free", "tentative", "busy", "oof", "workingElsewhere", "unknown"}
SENSITIVITY = {"normal", "personal", "private", "confidential"}
EVENT_TYPES = {"singleInstance", "occurrence", "exception", "seriesMaster"}


PRIVATE_SENSITIVITIES = frozenset({"private", "confidential"})


class TitlePolicy(StrEnum):
    """What the connector sends of an event's subject, whatever the service asks: the
    customer's setting (``CONNECTOR_TITLE_POLICY``)."""

    SEND = "send"
    WITHHOLD = "withhold"
    WITHHOLD_PRIVATE = "withhold_private"

    def subject_of(self, subject: str | None, sensitivity: str) -> str | None:
        """The subject as it may leave the tenant: ``None`` where the policy withholds it."""
        if self is TitlePolicy.WITHHOLD:
            return None
        if self is TitlePolicy.WITHHOLD_PRIVATE and sensitivity in PRIVATE_SENSITIVITIES:
            return None
        return subject


class MalformedEvent(ValueError):
    """A Graph event lacking a basic field or carrying one of the wrong type."""


@dataclass(frozen=True)
class BasicEvent:
    id: str
    start: str
    end: str
    isAllDay: bool
    showAs: str
    isCancelled: bool
    subject: str | None
    sensitivity: str
    type: str
    seriesMasterId: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def basic_event(raw: dict[str, Any], titles: TitlePolicy = TitlePolicy.SEND) -> BasicEvent:
    """Build the basic view of one Graph event (read with ``Prefer: outlook.timezone="UTC"``);
    its subject is ``None`` where the title policy withholds it."""
    event_id = raw.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise MalformedEvent("event without an id")
    sensitivity = _choice(raw.get("sensitivity"), SENSITIVITY, "normal")
    return BasicEvent(
        id=event_id,
        start=_instant(raw.get("start"), "start"),
        end=_instant(raw.get("end"), "end"),
        isAllDay=_bool(raw.get("isAllDay"), "isAllDay", default=False),
        showAs=_choice(raw.get("showAs"), SHOW_AS, "unknown"),
        isCancelled=_bool(raw.get("isCancelled"), "isCancelled", default=False),
        subject=titles.subject_of(_optional_text(raw.get("subject")), sensitivity),
        sensitivity=sensitivity,
        type=_choice(raw.get("type"), EVENT_TYPES, "singleInstance"),
        seriesMasterId=_optional_text(raw.get("seriesMasterId")),
    )


def _instant(value: Any, name: str) -> str:
    """``{"dateTime": "...0000000", "timeZone": "UTC"}`` -> ``2026-11-24T08:00:00Z``.

    With the UTC preference Graph answers in UTC; all-day events come back midnight-to-midnight
    of their local dates whatever the preference, and are passed on exactly so."""
    if not isinstance(value, dict):
        raise MalformedEvent(f"{name} is not a dateTimeTimeZone")
    moment, zone = value.get("dateTime"), value.get("timeZone")
    if not isinstance(moment, str):
        raise MalformedEvent(f"{name}.dateTime missing")
    if zone not in (None, "UTC", "Etc/UTC", "Coordinated Universal Time"):
        raise MalformedEvent(f"{name} is in {zone!r}, expected UTC")
    try:
        return to_graph_utc(parse_instant(moment))
    except ValueError as exc:
        raise MalformedEvent(f"{name}.dateTime {moment!r} is not ISO 8601") from exc


def _bool(value: Any, name: str, *, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise MalformedEvent(f"{name} is not a boolean")
    return value


def _choice(value: Any, allowed: set[str], fallback: str) -> str:
    return value if isinstance(value, str) and value in allowed else fallback


def _optional_text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
