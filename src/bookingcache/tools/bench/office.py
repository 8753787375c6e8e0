"""The office day ``bookingcache bench compare`` plays on the Graph emulator, and what each
contender has shown of it.

The rooms' calendars cover a 12-hour view from the run's own start (rounded down to the half
hour), so nothing depends on the date, the weekday or the hour the run starts at. A fifth of
the rooms are busy (more than half their half-hour slots booked at the start, eight times the
changes of a quiet room); every fourth room has a daily recurring meeting. Changes arrive at
random (a Poisson process of the window's rate, from a seeded generator): bookings, moves and
cancellations of single meetings, and of recurring ones (an occurrence moved or cancelled, a
new daily series).

Every change makes one span of its room busy and/or one span free, and is "shown" by a
contender once a view of the room it holds (an availability answer, a poller's last poll)
covers the busy span and no longer covers the free one. So that this stays true until every
contender had its chance, a freed slot is not booked again, and a new booking is not moved or
cancelled, within the grace period (two poll intervals by default).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bookingcache.tools.bench.activity import ORGANIZER, mailbox

SLOT_S = 1800.0
MEETING_S = 1500.0  # 25 minutes: adjacent meetings never merge into one busy span
SLOTS = 24  # a 12-hour view
BUSY_SHARE = 0.2
BUSY_WEIGHT = 8


@dataclass(slots=True)
class Change:
    room: int
    window: str
    kind: str
    busy: tuple[float, float] | None  # epoch seconds that must show as busy
    free: tuple[float, float] | None  # epoch seconds that must no longer show as busy
    sent: float = 0.0  # time.monotonic() just before the control call
    seen: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Meeting:
    event_id: str | None
    settled_at: float  # monotonic: it may be moved or cancelled from then on
    series_start: float | None = None  # a series occurrence: its original start (epoch)


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def covered(span: tuple[float, float], busy: list[tuple[float, float]]) -> bool:
    return any(start <= span[0] + 0.001 and span[1] - 0.001 <= end for start, end in busy)


def shows(change: Change, busy: list[tuple[float, float]]) -> bool:
    return (change.busy is None or covered(change.busy, busy)) and (
        change.free is None or not covered(change.free, busy)
    )


class Office:
    def __init__(self, *, rooms: int, seed: int, grace_s: float, started: float) -> None:
        self.rooms = rooms
        self.rng = random.Random(seed)  # noqa: S311 (a reproducible workload)
        self.grace_s = grace_s
        self.base = started - started % SLOT_S
        self.view = (self.base, self.base + SLOTS * SLOT_S)
        count = max(1, round(rooms * BUSY_SHARE))
        self.busy_rooms = set(self.rng.sample(range(rooms), count))
        self.weights = [BUSY_WEIGHT if r in self.busy_rooms else 1 for r in range(rooms)]
        self.meetings: list[dict[int, Meeting]] = [{} for _ in range(rooms)]
        self.cooling: list[dict[int, float]] = [{} for _ in range(rooms)]
        self.changes: list[Change] = []
        self.failures = 0
        self.skipped = 0

    def span(self, slot: int) -> tuple[float, float]:
        start = self.base + slot * SLOT_S
        return start, start + MEETING_S

    def _free_slots(self, room: int, now: float) -> list[int]:
        return [
            slot
            for slot in range(1, SLOTS)
            if slot not in self.meetings[room] and self.cooling[room].get(slot, 0.0) <= now
        ]

    # --- the calendars at the start ----------------------------------------------------------

    async def seed(self, control: httpx.AsyncClient) -> int:
        """Book the rooms' meetings and series before anyone subscribes; how many."""
        calls: list[tuple[int, int, dict[str, Any]]] = []
        for room in range(self.rooms):
            share = 0.55 if room in self.busy_rooms else 0.1
            taken = [slot for slot in range(1, SLOTS) if self.rng.random() < share]
            calls += [(room, slot, self._booking(slot)) for slot in taken]
            free = sorted(set(range(1, SLOTS)) - set(taken))
            if room % 4 == 0 and free:
                slot = self.rng.choice(free)
                calls.append((room, slot, self._series(slot, days_before=1)))
        semaphore = asyncio.Semaphore(16)

        async def one(room: int, slot: int, body: dict[str, Any]) -> None:
            async with semaphore:
                answer = await control.post(f"/mailboxes/{mailbox(room)}/bookings", json=body)
            if answer.status_code != 201:
                raise RuntimeError(f"seeding failed: {answer.text[:300]}")
            series = self.span(slot)[0] if "recurrence" in body else None
            self.meetings[room][slot] = Meeting(answer.json()["id"], 0.0, series)

        await asyncio.gather(*(one(*call) for call in calls))
        return len(calls)

    def _booking(self, slot: int) -> dict[str, Any]:
        start, end = self.span(slot)
        return {
            "organizer": ORGANIZER,
            "subject": "Meeting",
            "start": _iso(start),
            "end": _iso(end),
        }

    def _series(self, slot: int, *, days_before: int) -> dict[str, Any]:
        start, end = self.span(slot)
        first = start - days_before * 86_400
        body = self._booking(slot)
        body.update(
            subject="Stand-up",
            start=_iso(first),
            end=_iso(end - days_before * 86_400),
            recurrence={
                "pattern": {"type": "daily", "interval": 1},
                "range": {"type": "noEnd", "startDate": _iso(first)[:10]},
            },
        )
        return body

    # --- changes during a window -------------------------------------------------------------

    def plan(self, window: str) -> tuple[Change, str, str, dict[str, Any] | None] | None:
        """The next change: (change, method, control path, body), the room's model updated as
        if it succeeded; None when the room picked has no room for it."""
        now = time.monotonic()
        room = self.rng.choices(range(self.rooms), weights=self.weights)[0]
        meetings = self.meetings[room]
        settled = [
            slot
            for slot, meeting in meetings.items()
            if meeting.event_id is not None and meeting.settled_at <= now
        ]
        singles = [slot for slot in settled if meetings[slot].series_start is None]
        series = [slot for slot in settled if meetings[slot].series_start is not None]
        free = self._free_slots(room, now)
        roll = self.rng.random()
        if roll < 0.15 and (series or free):
            return self._series_change(window, room, series, free, now)
        if roll < 0.40 and singles and free:
            old, new = self.rng.choice(singles), self.rng.choice(free)
            meeting = meetings.pop(old)
            self._cool(room, old, now)
            meetings[new] = Meeting(meeting.event_id, now + self.grace_s)
            start, end = self.span(new)
            change = Change(room, window, "move", self.span(new), self.span(old))
            path = f"/mailboxes/{mailbox(room)}/events/{meeting.event_id}/move"
            return change, "POST", path, {"start": _iso(start), "end": _iso(end)}
        if roll < 0.55 and singles:
            old = self.rng.choice(singles)
            meeting = meetings.pop(old)
            self._cool(room, old, now)
            change = Change(room, window, "cancel", None, self.span(old))
            return change, "DELETE", f"/mailboxes/{mailbox(room)}/events/{meeting.event_id}", None
        if not free:
            return None
        slot = self.rng.choice(free)
        meetings[slot] = Meeting(None, now + self.grace_s)
        change = Change(room, window, "book", self.span(slot), None)
        return change, "POST", f"/mailboxes/{mailbox(room)}/bookings", self._booking(slot)

    def _series_change(
        self, window: str, room: int, series: list[int], free: list[int], now: float
    ) -> tuple[Change, str, str, dict[str, Any] | None]:
        meetings = self.meetings[room]
        if not series:
            slot = self.rng.choice(free)
            meetings[slot] = Meeting(None, now + self.grace_s, self.span(slot)[0])
            change = Change(room, window, "series", self.span(slot), None)
            body = self._series(slot, days_before=0)
            return change, "POST", f"/mailboxes/{mailbox(room)}/bookings", body
        old = series[0]
        meeting = meetings.pop(old)
        self._cool(room, old, now)
        assert meeting.series_start is not None
        path = f"/mailboxes/{mailbox(room)}/events/{meeting.event_id}/occurrences"
        original = {"originalStart": _iso(meeting.series_start)}
        if free and self.rng.random() < 0.5:
            new = self.rng.choice(free)
            meetings[new] = Meeting(meeting.event_id, now + self.grace_s, meeting.series_start)
            start, end = self.span(new)
            change = Change(room, window, "occurrence-move", self.span(new), self.span(old))
            return (
                change,
                "POST",
                f"{path}/edit",
                {**original, "start": _iso(start), "end": _iso(end)},
            )
        change = Change(room, window, "occurrence-cancel", None, self.span(old))
        return change, "POST", f"{path}/cancel", original

    def _cool(self, room: int, slot: int, now: float) -> None:
        self.cooling[room][slot] = now + self.grace_s

    async def make(self, control: httpx.AsyncClient, window: str, on_change: Any) -> None:
        """Plan one change, tell ``on_change`` (before the call: a contender may show it
        before the call's answer arrives), and make it."""
        planned = self.plan(window)
        if planned is None:
            self.skipped += 1
            return
        change, method, path, body = planned
        change.sent = time.monotonic()
        on_change(change)
        try:
            answer = await control.request(method, path, json=body)
        except httpx.TransportError:
            answer = None
        if answer is None or answer.status_code >= 300:
            # Not a change anyone could show: left out of the figures, counted.
            self.failures += 1
            change.seen.clear()
            change.sent = -1.0
            return
        self.changes.append(change)
        if method == "POST" and path.endswith("/bookings"):
            slot = int((change.busy[0] - self.base) // SLOT_S) if change.busy else -1
            meeting = self.meetings[change.room].get(slot)
            if meeting is not None and meeting.event_id is None:
                meeting.event_id = str(answer.json()["id"])

    async def drive(
        self,
        control: httpx.AsyncClient,
        window: str,
        per_hour: float,
        seconds: float,
        on_change: Any,
    ) -> None:
        """Changes at random instants (``per_hour`` on average) for ``seconds``."""
        tasks: set[asyncio.Task[None]] = set()
        end = time.monotonic() + seconds
        while True:
            wait = self.rng.expovariate(per_hour / 3600) if per_hour > 0 else seconds
            if time.monotonic() + wait >= end:
                await asyncio.sleep(max(0.0, end - time.monotonic()))
                break
            await asyncio.sleep(wait)
            task = asyncio.create_task(self.make(control, window, on_change))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
