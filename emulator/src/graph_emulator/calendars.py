"""The calendars of every mailbox, with the Python API the Graph routes, the control API and the
booking simulator write through.

Every write reports its Exchange-level changes to the notification sink the way Exchange does:
a room booking is one ``created`` followed by several ``updated`` (the room's calendar processing
stamps the item again), an edit is several ``updated``, a deletion one ``deleted`` plus
``updated``; and any change to a single occurrence is reported as ``updated`` on the series
master.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Callable
from typing import Any

from graph_emulator.changes import ChangeSink, ChangeType
from graph_emulator.clock import Clock
from graph_emulator.config import EmulatorConfig
from graph_emulator.directory import Directory, Mailbox
from graph_emulator.errors import GraphError, not_found
from graph_emulator.expansion import Instance, as_instance, expand, find_occurrence
from graph_emulator.ids import new_change_key, new_item_id, parse_occurrence_id
from graph_emulator.model import Occurrence, StoredEvent, apply_fields
from graph_emulator.views import View, full_event

ITEM_NOT_FOUND = "The specified object was not found in the store."
_OCCURRENCE_FIELDS = {"subject", "showAs", "sensitivity", "isCancelled", "location", "start", "end"}


def _missing() -> GraphError:
    return not_found(ITEM_NOT_FOUND)


class CalendarStore:
    def __init__(
        self,
        *,
        directory: Directory,
        clock: Clock,
        config: EmulatorConfig,
        rng: random.Random,
        sink: Callable[[], ChangeSink],
    ) -> None:
        self._directory = directory
        self._clock = clock
        self._config = config
        self._rng = rng
        self._sink = sink
        self._events: dict[str, dict[str, StoredEvent]] = {}

    # ---- reading -------------------------------------------------------------------------

    def items(self, mailbox: Mailbox) -> list[StoredEvent]:
        """Stored singles and series masters, oldest first."""
        return sorted(self._events.get(mailbox.id, {}).values(), key=lambda e: (e.start, e.id))

    def instances(self, mailbox: Mailbox, start: dt.datetime, end: dt.datetime) -> list[Instance]:
        """The calendar view of [start, end): singles, occurrences and exceptions, by start."""
        found: list[Instance] = []
        for event in self._events.get(mailbox.id, {}).values():
            found.extend(expand(event, mailbox.upn, start, end))
        found.sort(key=lambda i: (i.start, i.end, i.id))
        return found

    def find(self, mailbox: Mailbox, event_id: str) -> Instance:
        """A stored item or an occurrence by id; 404 ``ErrorItemNotFound`` otherwise."""
        events = self._events.get(mailbox.id, {})
        event = events.get(event_id)
        if event is not None:
            return as_instance(event, mailbox.upn)
        parsed = parse_occurrence_id(event_id)
        if parsed is not None:
            master = events.get(parsed[0])
            if master is not None and master.recurrence is not None:
                instance = find_occurrence(master, mailbox.upn, parsed[1])
                if instance is not None:
                    return instance
        raise _missing()

    def list_events(self, mailbox_id: str) -> list[dict[str, Any]]:
        mailbox = self._directory.resolve(mailbox_id)
        return [full_event(as_instance(e, mailbox.upn), View()) for e in self.items(mailbox)]

    def get_event(self, mailbox_id: str, event_id: str) -> dict[str, Any]:
        mailbox = self._directory.resolve(mailbox_id)
        return full_event(self.find(mailbox, event_id), View())

    # ---- writing -------------------------------------------------------------------------

    def create_event(
        self, mailbox_id: str, body: dict[str, Any], *, organizer: str | None = None
    ) -> dict[str, Any]:
        """Create an item in the mailbox's calendar. With an ``organizer`` other than the
        mailbox, this is a meeting request the room processes (subject, privacy, tentative)."""
        mailbox = self._directory.resolve(mailbox_id)
        now = self._clock.now()
        event = StoredEvent(
            id=new_item_id(self._rng),
            mailbox_id=mailbox.id,
            created=now,
            modified=now,
            change_key=new_change_key(self._rng),
            ical_uid="040000008200E00074C5B7101A82E008" + self._rng.randbytes(28).hex().upper(),
            start=now,
            end=now,
            zone_name="UTC",
            zone=mailbox.zone,
        )
        apply_fields(event, body, creating=True)
        booked_by = self._organizer(mailbox, organizer, body)
        event.organizer = {"name": booked_by[0], "address": booked_by[1]}
        is_request = mailbox.is_room and booked_by[1].lower() != mailbox.upn.lower()
        if is_request:
            self._process_room_request(mailbox, event)
        self._events.setdefault(mailbox.id, {})[event.id] = event
        self._notify(mailbox, event.id, "created")
        if is_request:
            self._notify(mailbox, event.id, "updated", self._config.burst_create_updates)
        return full_event(as_instance(event, mailbox.upn), View())

    def update_event(self, mailbox_id: str, event_id: str, patch: dict[str, Any]) -> dict[str, Any]:
        mailbox = self._directory.resolve(mailbox_id)
        parsed = parse_occurrence_id(event_id)
        if event_id not in self._events.get(mailbox.id, {}) and parsed is not None:
            return self.update_occurrence(mailbox.id, parsed[0], parsed[1], patch)
        event = self._stored(mailbox, event_id)
        apply_fields(event, patch, creating=False)
        if mailbox.is_room and event.organizer.get("address", "").lower() != mailbox.upn.lower():
            self._process_room_request(mailbox, event, subject_changed="subject" in patch)
        self._touch(event)
        self._notify(mailbox, event.id, "updated", self._edit_burst(mailbox))
        return full_event(as_instance(event, mailbox.upn), View())

    def delete_event(self, mailbox_id: str, event_id: str) -> None:
        mailbox = self._directory.resolve(mailbox_id)
        parsed = parse_occurrence_id(event_id)
        events = self._events.get(mailbox.id, {})
        if event_id not in events and parsed is not None:
            self.cancel_occurrence(mailbox.id, parsed[0], parsed[1])
            return
        if events.pop(event_id, None) is None:
            raise _missing()
        self._notify(mailbox, event_id, "deleted")
        if mailbox.is_room:
            self._notify(mailbox, event_id, "updated", self._config.burst_delete_updates)

    def cancel_event(self, mailbox_id: str, event_id: str) -> dict[str, Any]:
        """The organizer cancelled: the item stays, marked cancelled and free."""
        mailbox = self._directory.resolve(mailbox_id)
        event = self._stored(mailbox, event_id)
        event.is_cancelled = True
        event.show_as = "free"
        if not event.subject.startswith("Canceled: "):
            event.subject = "Canceled: " + event.subject
        self._touch(event)
        self._notify(mailbox, event.id, "updated", self._edit_burst(mailbox))
        return full_event(as_instance(event, mailbox.upn), View())

    def update_occurrence(
        self,
        mailbox_id: str,
        series_id: str,
        original_start: dt.datetime,
        patch: dict[str, Any],
    ) -> dict[str, Any]:
        mailbox = self._directory.resolve(mailbox_id)
        master = self._stored(mailbox, series_id)
        instance = self._occurrence(master, mailbox, original_start)
        unsupported = set(patch) - _OCCURRENCE_FIELDS
        if unsupported:
            raise GraphError(
                400,
                "ErrorInvalidRequest",
                f"The properties {sorted(unsupported)} cannot be changed on one occurrence.",
            )
        # Reuse the series' parsing so times and values are validated the same way.
        probe = StoredEvent(
            id=master.id,
            mailbox_id=mailbox.id,
            created=master.created,
            modified=master.modified,
            change_key="",
            ical_uid="",
            start=instance.start,
            end=instance.end,
            zone_name=master.zone_name,
            zone=master.zone,
            is_all_day=master.is_all_day,
            subject=str(instance.field("subject")),
            show_as=str(instance.field("showAs")),
            sensitivity=str(instance.field("sensitivity")),
            is_cancelled=bool(instance.field("isCancelled")),
            location=dict(instance.field("location") or {}),
        )
        apply_fields(probe, patch, creating=False)
        override = master.exceptions.get(instance.original_start or original_start)
        fields = dict(override.fields) if override is not None else {}
        for name, attr in (
            ("subject", "subject"),
            ("showAs", "show_as"),
            ("sensitivity", "sensitivity"),
            ("isCancelled", "is_cancelled"),
            ("location", "location"),
        ):
            if name in patch:
                fields[name] = getattr(probe, attr)
        now = self._clock.now()
        key = instance.original_start or original_start
        master.exceptions[key] = Occurrence(
            start=probe.start,
            end=probe.end,
            fields=fields,
            change_key=new_change_key(self._rng),
            modified=now,
        )
        self._touch(master)
        self._notify(mailbox, master.id, "updated", self._edit_burst(mailbox))
        return full_event(self.find(mailbox, instance.id), View())

    def cancel_occurrence(
        self, mailbox_id: str, series_id: str, original_start: dt.datetime
    ) -> None:
        mailbox = self._directory.resolve(mailbox_id)
        master = self._stored(mailbox, series_id)
        instance = self._occurrence(master, mailbox, original_start)
        key = instance.original_start or original_start
        master.exceptions.pop(key, None)
        master.cancelled.add(key)
        self._touch(master)
        self._notify(mailbox, master.id, "updated", self._edit_burst(mailbox))

    def clear(self) -> None:
        self._events.clear()

    # ---- helpers -------------------------------------------------------------------------

    def _stored(self, mailbox: Mailbox, event_id: str) -> StoredEvent:
        event = self._events.get(mailbox.id, {}).get(event_id)
        if event is None:
            raise _missing()
        return event

    def _occurrence(
        self, master: StoredEvent, mailbox: Mailbox, original_start: dt.datetime
    ) -> Instance:
        if master.recurrence is None:
            raise GraphError(400, "ErrorInvalidRequest", "The item is not a recurring series.")
        if original_start.tzinfo is None:
            original_start = original_start.replace(tzinfo=dt.UTC)
        instance = find_occurrence(master, mailbox.upn, original_start.astimezone(dt.UTC))
        if instance is None:
            raise _missing()
        return instance

    def _touch(self, event: StoredEvent) -> None:
        event.modified = self._clock.now()
        event.change_key = new_change_key(self._rng)

    def _edit_burst(self, mailbox: Mailbox) -> int:
        return self._config.burst_edit_updates if mailbox.is_room else 1

    def _notify(self, mailbox: Mailbox, event_id: str, change: ChangeType, times: int = 1) -> None:
        sink = self._sink()
        for _ in range(times):
            sink.event_changed(mailbox_id=mailbox.id, event_id=event_id, change_type=change)

    def _organizer(
        self, mailbox: Mailbox, organizer: str | None, body: dict[str, Any]
    ) -> tuple[str, str]:
        if organizer is None:
            given = body.get("organizer")
            if isinstance(given, dict) and isinstance(given.get("emailAddress"), dict):
                address = given["emailAddress"].get("address")
                organizer = address if isinstance(address, str) and address else None
        if organizer is None:
            return mailbox.display_name, mailbox.upn
        person = self._directory.find(organizer)
        if person is not None:
            return person.display_name, person.upn
        local = organizer.split("@", 1)[0]
        name = " ".join(part.capitalize() for part in local.replace("_", ".").split(".") if part)
        return name or organizer, organizer

    def _process_room_request(
        self, room: Mailbox, event: StoredEvent, *, subject_changed: bool = True
    ) -> None:
        """What Exchange's calendar processing (Set-CalendarProcessing) does to a request."""
        name = event.organizer.get("name", "")
        if subject_changed:
            if room.delete_subject and room.add_organizer_to_subject:
                event.subject = name
            elif room.delete_subject:
                event.subject = ""
            elif room.add_organizer_to_subject:
                event.subject = f"{name} {event.subject}".strip()
        if room.delete_comments:
            event.body_content = ""
        if room.remove_private_property:
            event.sensitivity = "normal"
        if room.booking_mode == "AutoUpdate":
            event.show_as = "tentative"
        attendees = {
            str(a.get("emailAddress", {}).get("address", "")).lower() for a in event.attendees
        }
        if room.upn.lower() not in attendees:
            event.attendees.append(
                {
                    "type": "resource",
                    "status": {
                        "response": "tentativelyAccepted"
                        if room.booking_mode == "AutoUpdate"
                        else "accepted",
                        "time": self._clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                    },
                    "emailAddress": {"name": room.display_name, "address": room.upn},
                }
            )
        if not event.ical_uid:
            event.ical_uid = uuid.uuid4().hex
