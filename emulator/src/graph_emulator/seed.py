"""Tenants to start from: ``demo`` (rooms in two buildings with meetings from the start of the
current week through the coming seven days, deterministic from a seed number and the emulator's
clock), ``live`` (the same, plus meetings around the current instant whatever the day and hour,
so that rooms are busy now and change within minutes) or a JSON file."""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from graph_emulator.auth import READ, READ_BASIC, READ_WRITE, App
from graph_emulator.directory import Mailbox
from graph_emulator.errors import GraphError
from graph_emulator.state import EmulatorState
from graph_emulator.timezones import windows_name

DOMAIN = "contoso.example"
BUILDINGS = (
    ("Harbour House", "hh", "Europe/Berlin", ("Fjord", "Skerry", "Tide", "Beacon", "Quay")),
    ("Riverside", "rs", "Europe/London", ("Willow", "Alder", "Heron", "Otter")),
)
PEOPLE = (
    "Kari Nordmann", "Ola Hansen", "Ingrid Berg", "Lars Johansen", "Sofia Lindqvist",
    "Emma Clarke", "James Whitfield", "Amira Haddad", "Lukas Becker", "Mia Schneider",
    "Noah Fischer", "Priya Raman", "Tomasz Nowak", "Chloe Martin", "Daniel Okafor",
    "Hannah Weber", "Mateo Garcia", "Yuki Tanaka", "Eva Svensson", "Oliver Brown",
)  # fmt: skip
TOPICS = (
    "Design review", "Sprint planning", "1:1", "Customer call", "Interview",
    "Budget check-in", "Architecture sync", "Retrospective", "Onboarding", "Vendor demo",
)  # fmt: skip


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def add_default_apps(state: EmulatorState, *, scope: list[Mailbox]) -> dict[str, App]:
    """A full-permission app, a ReadBasic-only app and one scoped (RBAC) to ``scope``."""
    rng = state.rng
    apps = {
        "full": App(
            _uuid(rng), "emu~" + rng.randbytes(18).hex(), "bookingcache", {READ, READ_WRITE}
        ),
        "readbasic": App(
            _uuid(rng), "emu~" + rng.randbytes(18).hex(), "bookingcache-basic", {READ_BASIC}
        ),
        "scoped": App(
            _uuid(rng),
            "emu~" + rng.randbytes(18).hex(),
            "bookingcache-scoped",
            {READ},
            {m.id for m in scope},
        ),
    }
    for app in apps.values():
        state.apps.add(app)
    return apps


def _person(state: EmulatorState, name: str) -> Mailbox:
    given, _, surname = name.partition(" ")
    upn = f"{given.lower()}.{surname.lower()}@{DOMAIN}"
    return state.directory.add(
        Mailbox(
            id=_uuid(state.rng),
            upn=upn,
            display_name=name,
            time_zone="Europe/Berlin",
            given_name=given,
            surname=surname,
        )
    )


def _rooms(state: EmulatorState) -> list[Mailbox]:
    rooms: list[Mailbox] = []
    rng = state.rng
    for building, code, zone, names in BUILDINGS:
        for floor in range(1, 5):
            for n, label in enumerate(names, start=1):
                number = len(rooms)
                rooms.append(
                    state.directory.add(
                        Mailbox(
                            id=_uuid(rng),
                            upn=f"room-{code}-{floor}{n:02d}@{DOMAIN}",
                            display_name=f"{building} {floor}.{n:02d} {label}",
                            time_zone=zone,
                            is_room=True,
                            booking_mode="AutoUpdate" if number % 6 == 5 else "AutoAccept",
                            delete_subject=number % 7 != 3,
                            add_organizer_to_subject=True,
                            remove_private_property=number % 8 != 4,
                            building=building,
                            floor=floor,
                            floor_label=f"{floor}",
                            capacity=rng.choice((4, 6, 8, 10, 12, 20)),
                        )
                    )
                )
    return rooms


def _when(day: dt.date, minutes: int, zone: str) -> dict[str, str]:
    moment = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=minutes)
    return {"dateTime": moment.isoformat(), "timeZone": windows_name(zone)}


def _series(
    state: EmulatorState, room: Mailbox, organizer: Mailbox, monday: dt.date, now: dt.datetime
) -> None:
    rng = state.rng
    calendars = state.calendars
    kind = rng.randrange(3)
    if kind == 0:
        start = monday - dt.timedelta(weeks=4)
        body = {
            "subject": "Weekly planning",
            "start": _when(start, 10 * 60, room.time_zone),
            "end": _when(start, 10 * 60 + 30, room.time_zone),
            "recurrence": {
                "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
                "range": {"type": "noEnd", "startDate": start.isoformat()},
            },
        }
    elif kind == 1:
        body = {
            "subject": "Stand-up",
            "start": _when(monday, 9 * 60, room.time_zone),
            "end": _when(monday, 9 * 60 + 15, room.time_zone),
            "recurrence": {
                "pattern": {
                    "type": "weekly",
                    "interval": 1,
                    "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                },
                "range": {
                    "type": "endDate",
                    "startDate": monday.isoformat(),
                    "endDate": (monday + dt.timedelta(weeks=8)).isoformat(),
                },
            },
        }
    else:
        first = monday.replace(day=1)
        body = {
            "subject": "Monthly all-hands prep",
            "start": _when(first, 14 * 60, room.time_zone),
            "end": _when(first, 15 * 60, room.time_zone),
            "recurrence": {
                "pattern": {
                    "type": "relativeMonthly",
                    "interval": 1,
                    "daysOfWeek": ["tuesday"],
                    "index": "first",
                },
                "range": {
                    "type": "numbered",
                    "startDate": first.isoformat(),
                    "numberOfOccurrences": 12,
                },
            },
        }
    master = calendars.create_event(room.id, body, organizer=organizer.upn)
    if kind == 1 and rng.random() < 0.5:
        # One of the coming week's stand-ups was cancelled and another moved.
        coming = calendars.instances(room, now, now + dt.timedelta(days=7))
        week = [i for i in coming if i.event.id == master["id"]]
        if len(week) >= 3:
            calendars.cancel_occurrence(room.id, master["id"], week[1].start)
            moved = week[2]
            calendars.update_occurrence(
                room.id,
                master["id"],
                moved.start,
                {
                    "start": _when(
                        moved.start.astimezone(room.zone).date(), 9 * 60 + 30, room.time_zone
                    ),
                    "end": _when(
                        moved.start.astimezone(room.zone).date(), 9 * 60 + 45, room.time_zone
                    ),
                },
            )


def demo_days(now: dt.datetime, zones: set[ZoneInfo]) -> list[dt.date]:
    """The working days the demo fills: from the Monday of the current week through the day the
    coming seven days end on, in every one of ``zones`` (so on a weekend, the coming week too)."""
    first = min(now.astimezone(zone).date() for zone in zones)
    last = max((now + dt.timedelta(days=7)).astimezone(zone).date() for zone in zones)
    day = first - dt.timedelta(days=first.weekday())
    days: list[dt.date] = []
    while day <= last:
        if day.weekday() < 5:
            days.append(day)
        day += dt.timedelta(days=1)
    return days


def _around_now(state: EmulatorState, rooms: list[Mailbox], people: list[Mailbox]) -> None:
    """Meetings from a little before now to some hours ahead in every room, in the gaps between
    the meetings it has, whatever the day and hour: about half the rooms are taken now, and
    some change within the quarter hour (a meeting ending or starting)."""
    rng = state.rng
    now = state.clock.now().replace(second=0, microsecond=0)
    now -= dt.timedelta(minutes=now.minute % 5)
    for room in rooms:
        cursor = now - dt.timedelta(minutes=rng.choice((5, 10, 20, 30, 45, 60, 90)))
        until = now + dt.timedelta(hours=8)
        while cursor < until:
            length = dt.timedelta(minutes=rng.choice((15, 30, 30, 45, 60, 90)))
            taken = [
                i
                for i in state.calendars.instances(room, cursor, cursor + length)
                if not i.field("isCancelled") and i.field("showAs") != "free"
            ]
            if not taken and rng.random() < 0.6:
                state.calendars.create_event(
                    room.id,
                    {
                        "subject": rng.choice(TOPICS),
                        "start": {
                            "dateTime": cursor.strftime("%Y-%m-%dT%H:%M:%S"),
                            "timeZone": "UTC",
                        },
                        "end": {
                            "dateTime": (cursor + length).strftime("%Y-%m-%dT%H:%M:%S"),
                            "timeZone": "UTC",
                        },
                        "sensitivity": "private" if rng.random() < 0.1 else "normal",
                        "location": {"displayName": room.display_name},
                    },
                    organizer=rng.choice(people).upn,
                )
            cursor += length + dt.timedelta(minutes=rng.choice((0, 5, 10, 15, 30, 45)))


def seed_demo(state: EmulatorState, *, around_now: bool = False) -> dict[str, App]:
    """A few dozen rooms across two buildings, with meetings on every working day from the start
    of the current week (by the emulator's clock) through the coming seven days; with
    ``around_now``, also meetings around the current instant (``_around_now``)."""
    rng = state.rng
    people = [_person(state, name) for name in PEOPLE]
    rooms = _rooms(state)
    now = state.clock.now()
    days = demo_days(now, {room.zone for room in rooms})
    monday = days[0]
    # The renovation falls in the coming seven days: the first Wednesday from today on.
    today = min(now.astimezone(room.zone).date() for room in rooms)
    renovation = today + dt.timedelta(days=(2 - today.weekday()) % 7)
    for index, room in enumerate(rooms):
        if index % 3 == 0:
            _series(state, room, rng.choice(people), monday, now)
        for day in days:
            slot = 8 * 60 + rng.choice((0, 30, 60))
            while slot < 17 * 60:
                length = rng.choice((30, 30, 60, 60, 90))
                if rng.random() < 0.55 and slot + length <= 18 * 60:
                    body: dict[str, Any] = {
                        "subject": rng.choice(TOPICS),
                        "body": {"contentType": "html", "content": "<p>Agenda to follow.</p>"},
                        "start": _when(day, slot, room.time_zone),
                        "end": _when(day, slot + length, room.time_zone),
                        "sensitivity": "private" if rng.random() < 0.1 else "normal",
                        "location": {"displayName": room.display_name},
                    }
                    created = state.calendars.create_event(
                        room.id, body, organizer=rng.choice(people).upn
                    )
                    if rng.random() < 0.04:
                        state.calendars.cancel_event(room.id, created["id"])
                slot += length + rng.choice((0, 30, 60, 90))
        if index % 11 == 4:
            state.calendars.create_event(
                room.id,
                {
                    "subject": "Floor renovation",
                    "isAllDay": True,
                    "showAs": "oof",
                    "start": _when(renovation, 0, room.time_zone),
                    "end": _when(renovation + dt.timedelta(days=1), 0, room.time_zone),
                },
            )
    if around_now:
        _around_now(state, rooms, people)
    return add_default_apps(state, scope=[r for r in rooms if r.building == BUILDINGS[0][0]])


def _bad_seed(message: str) -> GraphError:
    return GraphError(400, "InvalidSeed", message)


def seed_file(state: EmulatorState, path: Path) -> dict[str, App]:
    """Load mailboxes, apps and events from a JSON file (see the README for the format)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise _bad_seed("the seed file must hold a JSON object")
    fields = set(Mailbox.__dataclass_fields__) - {"working_hours"}
    for entry in data.get("mailboxes", []):
        values = {k: v for k, v in entry.items() if k in fields}
        values.setdefault("id", _uuid(state.rng))
        if "upn" not in values or "display_name" not in values:
            raise _bad_seed("every mailbox needs 'upn' and 'display_name'")
        state.directory.add(Mailbox(**values))
    apps: dict[str, App] = {}
    for entry in data.get("apps", []):
        scope = entry.get("mailbox_scope")
        app = App(
            client_id=entry.get("client_id") or _uuid(state.rng),
            client_secret=entry.get("client_secret") or "emu~" + state.rng.randbytes(18).hex(),
            display_name=entry.get("display_name", "app"),
            roles=set(entry.get("roles", [READ])),
            mailbox_scope=(
                {state.directory.resolve(m).id for m in scope} if scope is not None else None
            ),
        )
        apps[entry.get("name", app.display_name)] = state.apps.add(app)
    for entry in data.get("events", []):
        state.calendars.create_event(
            entry["mailbox"], entry["event"], organizer=entry.get("organizer")
        )
    if not apps:
        apps = add_default_apps(state, scope=state.directory.rooms()[:1])
    return apps
