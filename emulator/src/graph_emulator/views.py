"""Graph's JSON for events: full objects, ``$select`` projections, ReadBasic redaction and the
``Prefer: outlook.timezone`` rendering of ``start``/``end``."""

from __future__ import annotations

import datetime as dt
import html
import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from graph_emulator.errors import GraphError
from graph_emulator.expansion import Instance
from graph_emulator.timezones import UTC, format_local

EVENT_PROPERTIES = (
    "id",
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "transactionId",
    "originalStartTimeZone",
    "originalEndTimeZone",
    "iCalUId",
    "uid",
    "reminderMinutesBeforeStart",
    "isReminderOn",
    "hasAttachments",
    "subject",
    "bodyPreview",
    "importance",
    "sensitivity",
    "isAllDay",
    "isCancelled",
    "isOrganizer",
    "responseRequested",
    "seriesMasterId",
    "showAs",
    "type",
    "webLink",
    "onlineMeetingUrl",
    "isOnlineMeeting",
    "onlineMeetingProvider",
    "allowNewTimeProposals",
    "occurrenceId",
    "isDraft",
    "hideAttendees",
    "responseStatus",
    "body",
    "start",
    "end",
    "originalStart",
    "location",
    "locations",
    "recurrence",
    "attendees",
    "organizer",
    "onlineMeeting",
)
SELECTABLE = {p.lower(): p for p in (*EVENT_PROPERTIES, "attachments", "extensions")}
# What Calendars.ReadBasic(.All) never returns.
BASIC_HIDDEN = {"body", "bodyPreview", "attachments", "extensions"}


@dataclass(frozen=True)
class View:
    zone: ZoneInfo = UTC
    zone_name: str = "UTC"
    basic: bool = False
    select: tuple[str, ...] | None = None


def parse_select(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names: list[str] = []
    for raw in value.split(","):
        name = raw.strip()
        if not name:
            continue
        known = SELECTABLE.get(name.lower())
        if known is None:
            raise GraphError(
                400,
                "RequestBroker--ParseUri",
                f"Could not find a property named '{name}' on type "
                "'Microsoft.OutlookServices.Event'.",
            )
        names.append(known)
    return tuple(names)


def _stamp(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "0Z"


def _preview(instance: Instance) -> str:
    text = instance.event.body_content
    if instance.event.body_type == "html":
        text = re.sub(r"<[^>]+>", " ", text)
    return " ".join(html.unescape(text).split())[:255]


def _when(instance: Instance, value: dt.datetime, view: View) -> dict[str, str]:
    if instance.field("isAllDay"):
        # All-day items are midnight to midnight in any zone.
        local = value.astimezone(instance.event.zone)
        return {"dateTime": format_local(local), "timeZone": view.zone_name}
    return {"dateTime": format_local(value.astimezone(view.zone)), "timeZone": view.zone_name}


def full_event(instance: Instance, view: View) -> dict[str, Any]:
    event = instance.event
    organizer = event.organizer or {}
    location = dict(instance.field("location") or {})
    location.setdefault("displayName", "")
    location.setdefault("locationType", "default")
    location.setdefault("uniqueIdType", "unknown")
    is_master = instance.type == "seriesMaster"
    data: dict[str, Any] = {
        "@odata.etag": f'W/"{instance.change_key}"',
        "id": instance.id,
        "createdDateTime": _stamp(event.created),
        "lastModifiedDateTime": _stamp(instance.modified),
        "changeKey": instance.change_key,
        "categories": list(event.categories),
        "transactionId": event.transaction_id,
        "originalStartTimeZone": event.zone_name,
        "originalEndTimeZone": event.zone_name,
        "iCalUId": event.ical_uid,
        "uid": event.ical_uid,
        "reminderMinutesBeforeStart": event.reminder_minutes,
        "isReminderOn": event.is_reminder_on,
        "hasAttachments": False,
        "subject": instance.field("subject"),
        "bodyPreview": _preview(instance),
        "importance": event.importance,
        "sensitivity": instance.field("sensitivity"),
        "isAllDay": instance.field("isAllDay"),
        "isCancelled": instance.field("isCancelled"),
        "isOrganizer": organizer.get("address", "").lower() == instance.mailbox_upn.lower(),
        "responseRequested": True,
        "seriesMasterId": instance.series_master_id,
        "showAs": instance.field("showAs"),
        "type": instance.type,
        "webLink": "https://outlook.office365.com/owa/?itemid="
        + instance.id.replace("=", "%3D")
        + "&exvsurl=1&path=/calendar/item",
        "onlineMeetingUrl": None,
        "isOnlineMeeting": False,
        "onlineMeetingProvider": "unknown",
        "allowNewTimeProposals": True,
        "occurrenceId": None,
        "isDraft": False,
        "hideAttendees": False,
        "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
        "body": {"contentType": event.body_type, "content": event.body_content},
        "start": _when(instance, instance.start, view),
        "end": _when(instance, instance.end, view),
        "location": location,
        "locations": [location] if location.get("displayName") else [],
        "recurrence": event.recurrence if is_master else None,
        "attendees": list(event.attendees),
        "organizer": {"emailAddress": dict(organizer)},
        "onlineMeeting": None,
    }
    if instance.original_start is not None:
        data["originalStart"] = instance.original_start.strftime("%Y-%m-%dT%H:%M:%SZ")
    return data


def render(instance: Instance, view: View) -> dict[str, Any]:
    data = full_event(instance, view)
    if view.basic:
        for key in BASIC_HIDDEN:
            data.pop(key, None)
    if view.select is None:
        return data
    wanted = {"id", "@odata.etag", *view.select}
    return {k: v for k, v in data.items() if k in wanted}
