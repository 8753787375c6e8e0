"""Turning stored items into the instances a calendar view shows: singles, series masters,
occurrences, edited occurrences (``exception``), with cancelled occurrences left out."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from graph_emulator import recurrence as rec
from graph_emulator.ids import occurrence_id
from graph_emulator.model import Occurrence, StoredEvent

_FIELDS = {
    "subject": "subject",
    "showAs": "show_as",
    "sensitivity": "sensitivity",
    "isAllDay": "is_all_day",
    "isCancelled": "is_cancelled",
    "location": "location",
}


@dataclass
class Instance:
    event: StoredEvent
    mailbox_upn: str
    id: str
    type: str
    start: dt.datetime
    end: dt.datetime
    original_start: dt.datetime | None = None
    override: Occurrence | None = None

    @property
    def series_master_id(self) -> str | None:
        return self.event.id if self.type in ("occurrence", "exception") else None

    @property
    def change_key(self) -> str:
        if self.override is not None and self.override.change_key:
            return self.override.change_key
        return self.event.change_key

    @property
    def modified(self) -> dt.datetime:
        if self.override is not None and self.override.modified is not None:
            return self.override.modified
        return self.event.modified

    def field(self, name: str) -> Any:
        if self.override is not None and name in self.override.fields:
            return self.override.fields[name]
        return getattr(self.event, _FIELDS[name])


def as_instance(event: StoredEvent, mailbox_upn: str) -> Instance:
    return Instance(event, mailbox_upn, event.id, event.kind, event.start, event.end)


def _occurrence_times(event: StoredEvent, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    local_start = dt.datetime.combine(day, event.local_start.time())
    local_end = local_start + (event.local_end - event.local_start)
    zone = event.zone
    return (
        local_start.replace(tzinfo=zone).astimezone(dt.UTC),
        local_end.replace(tzinfo=zone).astimezone(dt.UTC),
    )


def occurrences(event: StoredEvent, mailbox_upn: str, *, until: dt.datetime) -> list[Instance]:
    """Occurrences and exceptions of a series whose original start is before ``until`` (or whose
    edited time is), cancelled ones left out."""
    assert event.recurrence is not None
    last_day = until.astimezone(event.zone).date() + dt.timedelta(days=1)
    found: list[Instance] = []
    for day in rec.occurrence_dates(event.recurrence, until=last_day):
        start, end = _occurrence_times(event, day)
        if start in event.cancelled:
            continue
        override = event.exceptions.get(start)
        occ_id = occurrence_id(event.id, start)
        if override is not None:
            found.append(
                Instance(
                    event,
                    mailbox_upn,
                    occ_id,
                    "exception",
                    override.start,
                    override.end,
                    start,
                    override,
                )
            )
        else:
            found.append(Instance(event, mailbox_upn, occ_id, "occurrence", start, end, start))
    # Edited occurrences moved to later than the expansion horizon still belong.
    return found


def find_occurrence(
    event: StoredEvent, mailbox_upn: str, original_start: dt.datetime
) -> Instance | None:
    for instance in occurrences(event, mailbox_upn, until=original_start + dt.timedelta(days=1)):
        if instance.original_start == original_start:
            return instance
    return None


def overlaps(instance: Instance, start: dt.datetime, end: dt.datetime) -> bool:
    if instance.start == instance.end:
        return start <= instance.start < end
    return instance.start < end and instance.end > start


def expand(
    event: StoredEvent, mailbox_upn: str, start: dt.datetime, end: dt.datetime
) -> list[Instance]:
    """The instances of one stored item inside [start, end)."""
    if event.recurrence is None:
        single = as_instance(event, mailbox_upn)
        return [single] if overlaps(single, start, end) else []
    # An exception may have been moved up to a few weeks later than its original slot.
    horizon = max([end, *(o.end for o in event.exceptions.values())])
    return [i for i in occurrences(event, mailbox_upn, until=horizon) if overlaps(i, start, end)]
