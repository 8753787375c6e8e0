"""Seeded booking activity: people booking, moving and cancelling rooms, editing and cancelling
single occurrences of series, at a steady rate, through the calendar store (so every action
produces Graph's realistic notification burst).

The choice of each action (which room, organizer, time, length, what to change) comes only from
the seed and the calendars' contents, so the same seed on the same seeded tenant plays the same
story; the event ids Exchange would assign come from the tenant's own generator.

By default meetings go anywhere in working hours of the coming ``horizon_days``. With
``near_now_hours`` the simulator works around the current instant instead, whatever the day and
hour (the demo's mode): half its actions change what rooms are doing *now* (a free room booked
from this minute, or a meeting under way cancelled, keeping about half the rooms busy), the
others book, move and cancel meetings in the coming hours, in the gaps between meetings.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from graph_emulator.errors import GraphError

if TYPE_CHECKING:
    from graph_emulator.directory import Mailbox
    from graph_emulator.state import EmulatorState

log = logging.getLogger(__name__)

SUBJECTS = (
    "Team sync",
    "Design review",
    "1:1",
    "Customer call",
    "Planning",
    "Retrospective",
    "Interview",
    "Budget review",
    "All hands prep",
    "Workshop",
)
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass
class SimulatorSettings:
    seed: int = 1
    rate_per_s: float = 5.0
    recurring_share: float = 0.2
    rooms: list[str] | None = None  # ids or UPNs; None = every room
    horizon_days: int = 7
    max_actions: int | None = None
    # Book around the current instant, up to this many hours ahead, any day and hour.
    near_now_hours: float | None = None


@dataclass
class Booking:
    mailbox_id: str
    event_id: str
    recurring: bool


@dataclass
class BookingSimulator:
    state: EmulatorState
    settings: SimulatorSettings
    rng: random.Random = field(init=False)
    bookings: list[Booking] = field(default_factory=list)
    actions: Counter[str] = field(default_factory=Counter)
    # The most recent actions, for status and tests; bounded for long demo runs.
    log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=1000))
    errors: int = 0
    _task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.settings.seed)  # noqa: S311 - reproducible activity
        rooms = self._rooms()
        if not rooms:
            raise GraphError(400, "InvalidRequest", "The simulator needs at least one room.")

    def _rooms(self) -> list[Mailbox]:
        if self.settings.rooms is None:
            return sorted(self.state.directory.rooms(), key=lambda m: m.upn)
        return [self.state.directory.resolve(r) for r in self.settings.rooms]

    def _organizers(self) -> list[str]:
        people = sorted(m.upn for m in self.state.directory.all() if not m.is_room)
        return people or ["alex.wilber@contoso.example", "megan.bowen@contoso.example"]

    # -- one action -------------------------------------------------------------------------------

    def step(self) -> dict[str, Any]:
        """Perform one action and return what was done."""
        if self.settings.near_now_hours is not None:
            entry = self._near_now_step(self.settings.near_now_hours)
            self.actions[entry["action"]] += 1
            self.log.append(entry)
            return entry
        roll = self.rng.random()
        series = [b for b in self.bookings if b.recurring]
        if not self.bookings or roll < 0.55:
            entry = self._book()
        elif roll < 0.70:
            entry = self._move()
        elif roll < 0.80:
            entry = self._cancel()
        elif roll < 0.92 and series:
            entry = self._edit_occurrence(series)
        elif series:
            entry = self._cancel_occurrence(series)
        else:
            entry = self._book()
        self.actions[entry["action"]] += 1
        self.log.append(entry)
        return entry

    def _slot(self, room: Mailbox) -> tuple[dt.datetime, dt.datetime]:
        today = self.state.clock.now().astimezone(room.zone).date()
        day = today + dt.timedelta(days=self.rng.randrange(self.settings.horizon_days))
        start_local = dt.datetime.combine(
            day, dt.time(self.rng.randrange(8, 18), self.rng.choice((0, 30))), tzinfo=room.zone
        )
        minutes = self.rng.choice((30, 30, 60, 60, 90))
        start = start_local.astimezone(dt.UTC)
        return start, start + dt.timedelta(minutes=minutes)

    def _book(self) -> dict[str, Any]:
        room = self.rng.choice(self._rooms())
        organizer = self.rng.choice(self._organizers())
        start, end = self._slot(room)
        recurring = self.rng.random() < self.settings.recurring_share
        body: dict[str, Any] = {
            "subject": self.rng.choice(SUBJECTS),
            "start": graph_time(start),
            "end": graph_time(end),
            "attendees": [
                {
                    "type": "resource",
                    "emailAddress": {"address": room.upn, "name": room.display_name},
                }
            ],
        }
        if recurring:
            local = start.astimezone(room.zone)
            body["recurrence"] = {
                "pattern": {
                    "type": "weekly",
                    "interval": 1,
                    "daysOfWeek": [DAYS[local.weekday()]],
                },
                "range": {
                    "type": "numbered",
                    "startDate": local.date().isoformat(),
                    "numberOfOccurrences": self.rng.randrange(4, 13),
                },
            }
        event = self.state.calendars.create_event(room.id, body, organizer=organizer)
        self.bookings.append(Booking(room.id, str(event["id"]), recurring))
        return {
            "action": "book",
            "room": room.upn,
            "start": body["start"]["dateTime"],
            "recurring": recurring,
            "organizer": organizer,
        }

    def _move(self) -> dict[str, Any]:
        booking = self.rng.choice(self.bookings)
        room = self.state.directory.resolve(booking.mailbox_id)
        start, end = self._slot(room)
        patch: dict[str, Any] = {"start": graph_time(start), "end": graph_time(end)}
        if booking.recurring:
            patch = {"subject": self.rng.choice(SUBJECTS)}
        self.state.calendars.update_event(room.id, booking.event_id, patch)
        return {"action": "move" if not booking.recurring else "edit", "room": room.upn}

    def _cancel(self) -> dict[str, Any]:
        booking = self.bookings.pop(self.rng.randrange(len(self.bookings)))
        room = self.state.directory.resolve(booking.mailbox_id)
        self.state.calendars.delete_event(room.id, booking.event_id)
        return {"action": "cancel", "room": room.upn}

    def _occurrence(self, series: list[Booking]) -> tuple[Booking, dt.datetime] | None:
        booking = self.rng.choice(series)
        room = self.state.directory.resolve(booking.mailbox_id)
        now = self.state.clock.now()
        window_end = now + dt.timedelta(days=7 * 13)
        starts = [
            i.original_start
            for i in self.state.calendars.instances(room, now - dt.timedelta(days=1), window_end)
            if i.event.id == booking.event_id and i.original_start is not None
        ]
        if not starts:
            return None
        return booking, self.rng.choice(starts)

    def _edit_occurrence(self, series: list[Booking]) -> dict[str, Any]:
        found = self._occurrence(series)
        if found is None:
            return self._book()
        booking, original = found
        subject = self.rng.choice(SUBJECTS)
        self.state.calendars.update_occurrence(
            booking.mailbox_id, booking.event_id, original, {"subject": subject}
        )
        return {"action": "edit_occurrence", "original_start": original.isoformat()}

    def _cancel_occurrence(self, series: list[Booking]) -> dict[str, Any]:
        found = self._occurrence(series)
        if found is None:
            return self._book()
        booking, original = found
        self.state.calendars.cancel_occurrence(booking.mailbox_id, booking.event_id, original)
        return {"action": "cancel_occurrence", "original_start": original.isoformat()}

    # -- around the current instant -----------------------------------------------------------

    def _occupied(self, room: Mailbox, start: dt.datetime, end: dt.datetime) -> list[Any]:
        """The instances that take ``room`` during [start, end)."""
        return [
            i
            for i in self.state.calendars.instances(room, start, end)
            if not i.field("isCancelled") and i.field("showAs") in ("busy", "tentative", "oof")
        ]

    def _near_now_step(self, hours: float) -> dict[str, Any]:
        now = self.state.clock.now().replace(second=0, microsecond=0)
        roll = self.rng.random()
        if roll < 0.5:
            return self._change_now(now)
        if roll < 0.75:
            offset = dt.timedelta(minutes=5 * self.rng.randrange(1, max(int(hours * 12), 2)))
            return self._book_gap(self.rng.choice(self._rooms()), now + offset, "book_later")
        if roll < 0.85 and self.bookings:
            return self._move_near(now, hours)
        return self._cancel_later(now, hours)

    def _change_now(self, now: dt.datetime) -> dict[str, Any]:
        """Book a free room from now, or end a meeting under way: about half the rooms busy."""
        rooms = self._rooms()
        taken = {
            room.id: self._occupied(room, now, now + dt.timedelta(minutes=1)) for room in rooms
        }
        busy = [room for room in rooms if taken[room.id]]
        free = [room for room in rooms if not taken[room.id]]
        if free and (len(busy) < len(rooms) / 2 or self.rng.random() < 0.3):
            return self._book_gap(self.rng.choice(free), now, "book_now")
        room = self.rng.choice(busy)
        instance = self.rng.choice(taken[room.id])
        self._remove(room, instance)
        return {"action": "cancel_now", "room": room.upn, "start": instance.start.isoformat()}

    def _book_gap(self, room: Mailbox, start: dt.datetime, action: str) -> dict[str, Any]:
        """A meeting from ``start`` in ``room``, ending before the next one begins."""
        minutes = self.rng.choice((15, 30, 30, 45, 60, 90))
        end = start + dt.timedelta(minutes=minutes)
        clash = self._occupied(room, start, end)
        if any(i.start <= start for i in clash):
            return {"action": "skip", "room": room.upn}
        if clash:
            end = min(i.start for i in clash)
        body: dict[str, Any] = {
            "subject": self.rng.choice(SUBJECTS),
            "start": graph_time(start),
            "end": graph_time(end),
            "attendees": [
                {
                    "type": "resource",
                    "emailAddress": {"address": room.upn, "name": room.display_name},
                }
            ],
        }
        organizer = self.rng.choice(self._organizers())
        event = self.state.calendars.create_event(room.id, body, organizer=organizer)
        self.bookings.append(Booking(room.id, str(event["id"]), False))
        return {"action": action, "room": room.upn, "start": body["start"]["dateTime"]}

    def _move_near(self, now: dt.datetime, hours: float) -> dict[str, Any]:
        booking = self.rng.choice(self.bookings)
        room = self.state.directory.resolve(booking.mailbox_id)
        start = now + dt.timedelta(minutes=5 * self.rng.randrange(0, max(int(hours * 12), 1)))
        minutes = self.rng.choice((15, 30, 45, 60))
        patch = {
            "start": graph_time(start),
            "end": graph_time(start + dt.timedelta(minutes=minutes)),
        }
        try:
            self.state.calendars.update_event(room.id, booking.event_id, patch)
        except GraphError:  # ended and gone meanwhile: forget it
            self.bookings.remove(booking)
            return {"action": "skip", "room": room.upn}
        return {"action": "move", "room": room.upn, "start": patch["start"]["dateTime"]}

    def _cancel_later(self, now: dt.datetime, hours: float) -> dict[str, Any]:
        room = self.rng.choice(self._rooms())
        later = [
            i for i in self._occupied(room, now, now + dt.timedelta(hours=hours)) if i.start > now
        ]
        if not later:
            return {"action": "skip", "room": room.upn}
        instance = self.rng.choice(later)
        self._remove(room, instance)
        return {"action": "cancel_later", "room": room.upn, "start": instance.start.isoformat()}

    def _remove(self, room: Mailbox, instance: Any) -> None:
        """Cancel one meeting: an occurrence of a series alone, a single meeting whole."""
        if instance.original_start is not None:
            self.state.calendars.cancel_occurrence(
                room.id, instance.event.id, instance.original_start
            )
            return
        self.state.calendars.delete_event(room.id, instance.event.id)
        self.bookings = [b for b in self.bookings if b.event_id != instance.event.id]

    # -- running ----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        tick_s = 0.05
        started = self.state.clock.monotonic()
        done = 0
        limit = self.settings.max_actions
        while limit is None or done < limit:
            elapsed_s = self.state.clock.monotonic() - started
            due = int(elapsed_s * self.settings.rate_per_s) + 1
            if due - done > max(self.settings.rate_per_s, 1.0):
                # More than a second behind (a virtual clock jumped): no flood, carry on.
                started = self.state.clock.monotonic() - done / self.settings.rate_per_s
                due = done + 1
            while done < due and (limit is None or done < limit):
                try:
                    self.step()
                except GraphError as exc:  # e.g. a room removed meanwhile: count and go on
                    self.errors += 1
                    log.info("simulated action failed: %s", exc)
                done += 1
            await self.state.clock.sleep(tick_s)

    def status(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "seed": self.settings.seed,
            "rate_per_s": self.settings.rate_per_s,
            "recurring_share": self.settings.recurring_share,
            "near_now_hours": self.settings.near_now_hours,
            "rooms": [m.upn for m in self._rooms()],
            "actions": dict(self.actions),
            "total": sum(self.actions.values()),
            "errors": self.errors,
            "live_bookings": len(self.bookings),
        }


def graph_time(value: dt.datetime) -> dict[str, str]:
    return {"dateTime": value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}
