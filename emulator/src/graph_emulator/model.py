"""Stored calendar items and the parsing of Graph event request bodies into them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from graph_emulator import recurrence as rec
from graph_emulator.errors import GraphError, bad_request
from graph_emulator.timezones import parse_local, require_zone

SHOW_AS = {"free", "tentative", "busy", "oof", "workingElsewhere", "unknown"}
SENSITIVITY = {"normal", "personal", "private", "confidential"}
IMPORTANCE = {"low", "normal", "high"}
WRITABLE = {
    "subject",
    "body",
    "start",
    "end",
    "isAllDay",
    "showAs",
    "sensitivity",
    "importance",
    "location",
    "locations",
    "attendees",
    "recurrence",
    "categories",
    "isReminderOn",
    "reminderMinutesBeforeStart",
    "responseRequested",
    "allowNewTimeProposals",
    "isOnlineMeeting",
    "onlineMeetingProvider",
    "hideAttendees",
    "transactionId",
    "organizer",
    "isCancelled",
}


@dataclass
class Occurrence:
    """What an edited occurrence changes relative to its series."""

    start: dt.datetime
    end: dt.datetime
    fields: dict[str, Any] = field(default_factory=dict)
    change_key: str = ""
    modified: dt.datetime | None = None


@dataclass
class StoredEvent:
    id: str
    mailbox_id: str
    created: dt.datetime
    modified: dt.datetime
    change_key: str
    ical_uid: str
    start: dt.datetime  # aware UTC
    end: dt.datetime  # aware UTC
    zone_name: str  # as the client gave it (Windows or IANA)
    zone: ZoneInfo
    is_all_day: bool = False
    subject: str = ""
    body_type: str = "html"
    body_content: str = ""
    show_as: str = "busy"
    sensitivity: str = "normal"
    importance: str = "normal"
    is_cancelled: bool = False
    organizer: dict[str, str] = field(default_factory=dict)
    attendees: list[dict[str, Any]] = field(default_factory=list)
    location: dict[str, Any] = field(default_factory=dict)
    categories: list[str] = field(default_factory=list)
    is_reminder_on: bool = True
    reminder_minutes: int = 15
    transaction_id: str | None = None
    recurrence: dict[str, Any] | None = None
    # Keyed by the occurrence's original start (aware UTC).
    exceptions: dict[dt.datetime, Occurrence] = field(default_factory=dict)
    cancelled: set[dt.datetime] = field(default_factory=set)

    @property
    def kind(self) -> str:
        return "seriesMaster" if self.recurrence is not None else "singleInstance"

    @property
    def local_start(self) -> dt.datetime:
        return self.start.astimezone(self.zone).replace(tzinfo=None)

    @property
    def local_end(self) -> dt.datetime:
        return self.end.astimezone(self.zone).replace(tzinfo=None)


def _time(value: Any, name: str) -> tuple[dt.datetime, str, ZoneInfo]:
    """(aware instant, zone name, zone) for a ``dateTimeTimeZone`` object."""
    if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
        raise bad_request(
            f"The property '{name}' must be a dateTimeTimeZone with 'dateTime' and 'timeZone'.",
            code="ErrorInvalidRequest",
        )
    zone_name = value.get("timeZone") or "UTC"
    if not isinstance(zone_name, str):
        raise bad_request(f"The timeZone of '{name}' must be a string.", "ErrorInvalidRequest")
    zone = require_zone(zone_name)
    local = parse_local(value["dateTime"])
    if local.tzinfo is None:
        local = local.replace(tzinfo=zone)
    return local.astimezone(dt.UTC), zone_name, zone


def check_properties(body: dict[str, Any]) -> None:
    for key in body:
        if key.startswith("@odata.") or key in WRITABLE or key == "id":
            continue
        raise GraphError(
            400,
            "RequestBodyRead",
            f"The property '{key}' does not exist on type 'microsoft.graph.event'. Make sure to "
            "only use property names that are defined by the type or mark the type as open type.",
        )


def _choice(body: dict[str, Any], key: str, allowed: set[str], current: str) -> str:
    if key not in body:
        return current
    value = body[key]
    if not isinstance(value, str) or value not in allowed:
        raise GraphError(
            400,
            "RequestBodyRead",
            f"Cannot convert the literal '{value}' to the expected type "
            f"'microsoft.graph.{key[0].upper()}{key[1:]}'.",
        )
    return str(value)


def _bool(body: dict[str, Any], key: str, current: bool) -> bool:
    if key not in body:
        return current
    value = body[key]
    if not isinstance(value, bool):
        raise GraphError(
            400,
            "RequestBodyRead",
            f"Cannot convert the literal '{value}' to the expected type 'Edm.Boolean'.",
        )
    return value


def _text_list(body: dict[str, Any], key: str, current: list[str]) -> list[str]:
    if key not in body:
        return current
    value = body[key]
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise GraphError(
            400, "RequestBodyRead", f"The property '{key}' must be a collection of strings."
        )
    return list(value)


def apply_fields(event: StoredEvent, body: dict[str, Any], *, creating: bool) -> None:
    """Apply a create or PATCH body to ``event``; raise a Graph 400 for anything invalid."""
    check_properties(body)
    if creating and ("start" not in body or "end" not in body):
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            "Your request can't be completed. An event must have a start and an end time.",
        )
    if "subject" in body:
        subject = body["subject"]
        if subject is not None and not isinstance(subject, str):
            raise GraphError(400, "RequestBodyRead", "The property 'subject' must be a string.")
        event.subject = subject or ""
    if "body" in body:
        content = body["body"] or {}
        if not isinstance(content, dict):
            raise bad_request("The property 'body' must be an itemBody.", "RequestBodyRead")
        event.body_type = str(content.get("contentType") or "text").lower()
        event.body_content = str(content.get("content") or "")
    event.is_all_day = _bool(body, "isAllDay", event.is_all_day)
    start, end = event.start, event.end
    if "start" in body:
        start, event.zone_name, event.zone = _time(body["start"], "start")
    if "end" in body:
        end, _, _ = _time(body["end"], "end")
    if end < start:
        raise GraphError(
            400,
            "ErrorCalendarEndDateIsEarlierThanStartDate",
            "The end date occurs before the start date.",
        )
    if event.is_all_day:
        local_start = start.astimezone(event.zone)
        local_end = end.astimezone(event.zone)
        if local_start.time() != dt.time(0) or local_end.time() != dt.time(0) or start == end:
            raise GraphError(
                400,
                "ErrorInvalidRequest",
                "Your request can't be completed. If the event is an all-day event, the start "
                "and end time must be at midnight and at least one day apart.",
            )
    event.start, event.end = start, end
    event.show_as = _choice(body, "showAs", SHOW_AS, event.show_as)
    event.sensitivity = _choice(body, "sensitivity", SENSITIVITY, event.sensitivity)
    event.importance = _choice(body, "importance", IMPORTANCE, event.importance)
    if "location" in body:
        location = body["location"] or {}
        event.location = dict(location) if isinstance(location, dict) else {}
    if "attendees" in body:
        attendees = body["attendees"] or []
        if not isinstance(attendees, list) or not all(
            isinstance(a, dict) and isinstance(a.get("emailAddress", {}), dict) for a in attendees
        ):
            raise bad_request("The property 'attendees' must be a collection.", "RequestBodyRead")
        event.attendees = [a for a in attendees if isinstance(a, dict)]
    event.categories = _text_list(body, "categories", event.categories)
    event.is_reminder_on = _bool(body, "isReminderOn", event.is_reminder_on)
    if "reminderMinutesBeforeStart" in body:
        minutes = body["reminderMinutesBeforeStart"]
        if not isinstance(minutes, int) or isinstance(minutes, bool) or minutes < 0:
            raise GraphError(
                400,
                "RequestBodyRead",
                f"Cannot convert the literal '{minutes}' to the expected type 'Edm.Int32'.",
            )
        event.reminder_minutes = minutes
    if "transactionId" in body:
        transaction = body["transactionId"]
        event.transaction_id = str(transaction) if transaction is not None else None
    event.is_cancelled = _bool(body, "isCancelled", event.is_cancelled)
    if "recurrence" in body:
        if body["recurrence"] is None:
            event.recurrence = None
        else:
            event.recurrence = rec.normalize(
                body["recurrence"],
                start_date=event.start.astimezone(event.zone).date(),
                zone_name=event.zone_name,
            )
        # A new pattern discards edited and cancelled occurrences, as Outlook does.
        event.exceptions.clear()
        event.cancelled.clear()
