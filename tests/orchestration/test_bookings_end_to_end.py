"""A booking made, moved, cancelled, and one occurrence of a series edited in "Microsoft 365"
reach the availability API through the whole deployment, for each way in and each event source:

- Alternative 1: the emulator notifies the service; Alternative 2: it notifies the connector's
  relay, which calls the service;
- the worker reads the calendar from Graph with the service's own app (``graph``), from the
  connector (``connector``), or applies the window the relay call carried (``push``; a push
  needs the relay, so it has no Alternative 1).

Every change is made through the emulator's control API and read back from the availability
API with the tenant's read token, as the map platform reads it. The first test sees changes
only through notifications (the reconciliation sweep's bound is far away); the second adds
Graph's faults (duplicated, reordered, delayed and dropped notifications, throttling, 503s,
timeouts, expired delta tokens) and short reconciliation bounds (the service's sweep, and the
connector's pushes for ``push``), and every room must converge."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from bookingcache.settings import SyncSettings
from bookingcache_connector.store import StateStore
from tests.support.waiting import wait_for

from .world import FAST, FAST_SYNC, TENANT, World, deployment

pytestmark = pytest.mark.slow

CASES = [(1, "graph"), (1, "connector"), (2, "graph"), (2, "connector"), (2, "push")]

Span = tuple[dt.datetime, dt.datetime]


def _z(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class Room:
    """One linked room, as the map platform reads it, and its calendar in the emulator."""

    def __init__(self, world: World, room_id: str, mailbox: str, reader: httpx.Client) -> None:
        self.world = world
        self.room_id = room_id
        self.mailbox = mailbox
        self.reader = reader
        zone = ZoneInfo(world.emulator.state.directory.resolve(mailbox).time_zone)
        # Nights of next week in the room's own zone: the seeded meetings are all in working
        # hours, so whatever is busy then is what this test booked.
        local = dt.datetime.now(zone).replace(hour=0, minute=0, second=0, microsecond=0)
        self.first_night = local + dt.timedelta(days=8)

    def at(self, day: int, hour: float) -> dt.datetime:
        # Elapsed time, not wall-clock time: the bookings here are made in UTC, so a daily series
        # keeps its UTC time across a daylight-saving change, and no time falls in a skipped hour.
        return self.first_night.astimezone(dt.UTC) + dt.timedelta(days=day, hours=hour)

    def night_busy(self) -> list[Span]:
        """The busy stretches the availability API shows for the first three nights (00:00 to
        07:00 in the room's zone)."""
        answer = self.reader.get(
            f"/v1/tenants/{TENANT}/rooms/{self.room_id}/availability",
            params={"start": _z(self.at(0, 0)), "end": _z(self.at(3, 0))},
        )
        assert answer.status_code == 200, answer.text
        spans = []
        for stretch in answer.json()["busy"]:
            start = dt.datetime.fromisoformat(stretch["start"]).astimezone(dt.UTC)
            end = dt.datetime.fromisoformat(stretch["end"]).astimezone(dt.UTC)
            if (start - self.first_night).total_seconds() % 86_400 < 7 * 3600:
                spans.append((start, end))
        return spans

    def shows(self, *spans: Span, timeout_s: float = 20.0) -> None:
        wait_for(
            lambda: self.night_busy() == sorted(spans),
            timeout_s=timeout_s,
            what=f"availability of {self.room_id} shows {spans}",
        )

    def subscribed(self) -> None:
        """Wait until Graph holds the calendar's subscription, the service recorded it and its
        cache holds the calendar."""
        subscription = wait_for(
            lambda: self.world.graph_subscriptions().get(self.mailbox), what="subscribed at Graph"
        )
        wait_for(
            lambda: (
                (row := self.world.health().get(self.mailbox, {})).get("subscription_id")
                == subscription["id"]
                and row["last_success_at"]
            ),
            what="the service recorded the subscription and read the calendar",
        )

    def refreshes(self) -> tuple[float, float]:
        """Refreshes the service has finished, whatever their outcome, and those running (from
        /metrics)."""
        metrics = self.world.admin.get("/metrics")
        assert metrics.status_code == 200, metrics.text
        finished = running = 0.0
        for line in metrics.text.splitlines():
            if line.startswith("bookingcache_sync_refreshes_total{"):
                finished += float(line.rsplit(" ", 1)[1])
            elif line.startswith("bookingcache_sync_refreshes_running "):
                running = float(line.rsplit(" ", 1)[1])
        return finished, running

    def settled_refreshes(self, quiet_s: float = 1.0) -> float:
        """The refreshes finished once none has run or finished for ``quiet_s`` (longer than
        the gather delay, so that nothing notified before is still to come)."""
        last, quiet_since = self.refreshes(), time.monotonic()

        def settled() -> bool:
            nonlocal last, quiet_since
            now = self.refreshes()
            if now != last or now[1]:
                last, quiet_since = now, time.monotonic()
            return time.monotonic() - quiet_since >= quiet_s

        wait_for(settled, what="no refresh running or finishing for a while")
        return last[0]

    # --- changes made in the room's calendar, as Exchange makes them --------------------------
    def control(self, method: str, path: str, body: dict[str, object] | None = None) -> dict:
        answer = self.world.control.request(method, f"/mailboxes/{self.mailbox}{path}", json=body)
        assert answer.status_code in (200, 201, 204), answer.text
        return answer.json() if answer.status_code != 204 else {}

    def book(self, span: Span, **extra: object) -> str:
        organizer = next(m for m in self.world.emulator.state.directory.all() if not m.is_room)
        body = {"organizer": organizer.upn, "subject": "Review", **extra}
        created = self.control(
            "POST", "/bookings", {**body, "start": _z(span[0]), "end": _z(span[1])}
        )
        return str(created["id"])

    def move(self, event_id: str, span: Span) -> None:
        self.control("POST", f"/events/{event_id}/move", {"start": _z(span[0]), "end": _z(span[1])})


@contextlib.contextmanager
def _deployed(
    tmp_path: Path,
    alternative: int,
    source: str,
    *,
    rooms: int,
    sync: SyncSettings = FAST_SYNC,
    push_reconcile_s: float = 900.0,
) -> Iterator[tuple[World, list[Room]]]:
    """The deployment with ``rooms`` rooms linked, subscribed and read once (pushed once, for
    ``push``: the connector's reconciliation pushes a new calendar's window at once), and a
    reader client of the map platform (the tenant's read token)."""
    with (
        deployment(
            tmp_path,
            orchestration=FAST,
            sync=sync,
            alternative=alternative,
            event_source=source,
            push_reconcile_s=push_reconcile_s,
        ) as world,
        httpx.Client(
            base_url=world.service_url,
            headers={"Authorization": f"Bearer {world.read_token}"},
            timeout=30,
        ) as reader,
    ):
        linked = []
        for index in range(1, rooms + 1):
            mailbox = world.rooms[index]["upn"]
            world.link(f"hall-{index}", mailbox)
            linked.append(Room(world, f"hall-{index}", mailbox, reader))
        for room in linked:
            room.subscribed()
        yield world, linked


@pytest.mark.pinned_dates
@pytest.mark.parametrize(
    ("alternative", "source"), CASES, ids=[f"alt{a}-{source}" for a, source in CASES]
)
def test_booked_moved_cancelled_and_an_edited_occurrence_show_in_availability(
    tmp_path: Path, alternative: int, source: str
) -> None:
    # Gather a burst for 300 ms before its refresh: on a stalled machine a booking's
    # notifications may reach the service in more than one delivery (or relay call).
    gathering = FAST_SYNC.model_copy(update={"coalesce_ms": 300})
    with _deployed(tmp_path, alternative, source, rooms=1, sync=gathering) as (world, [room]):
        assert room.night_busy() == []

        meeting = (room.at(0, 2), room.at(0, 3))
        # Counted once the first reading (or push, and its resync's refresh) is over.
        refreshes = room.settled_refreshes()
        booking = room.book(meeting)
        room.shows(meeting)
        # Graph's burst for a new booking (created, then updated) is one refresh.
        assert room.settled_refreshes() == refreshes + 1

        moved = (room.at(0, 4), room.at(0, 4.5))
        room.move(booking, moved)
        room.shows(moved)

        # The organizer cancels: the room's copy stays, marked cancelled, and is free again.
        room.control("DELETE", f"/events/{booking}?keep=true")
        room.shows()

        daily = [(room.at(day, 1), room.at(day, 1.5)) for day in range(3)]
        series = room.book(
            daily[0],
            recurrence={
                "pattern": {"type": "daily", "interval": 1},
                "range": {
                    "type": "numbered",
                    "startDate": daily[0][0].date().isoformat(),
                    "numberOfOccurrences": 3,
                },
            },
        )
        room.shows(*daily)

        # One occurrence moved: Graph reports it as a change of the series master.
        edited = (room.at(1, 5), room.at(1, 5.75))
        room.control(
            "POST",
            f"/events/{series}/occurrences/edit",
            {"originalStart": _z(daily[1][0]), "start": _z(edited[0]), "end": _z(edited[1])},
        )
        room.shows(daily[0], edited, daily[2])

        health = world.health()[room.mailbox]
        assert health["last_notification_at"] is not None
        assert health["state"] == "healthy"
        # The connector was told the tenant's staleness bound, within which it keeps its
        # reconciliation of pushed windows.
        tenant = world.admin.get(f"/v1/tenants/{TENANT}").json()
        state = StateStore.in_directory(world.tmp / "connector")
        try:
            assert state.staleness_bound_s() == tenant["staleness_bound_s"]
        finally:
            state.close()


@pytest.mark.parametrize(
    ("alternative", "source"), CASES, ids=[f"alt{a}-{source}" for a, source in CASES]
)
def test_graph_faults_and_lost_notifications_still_converge(
    tmp_path: Path, alternative: int, source: str
) -> None:
    # A short reconciliation bound: what a dropped notification leaves stale is read again;
    # and at the connector too, for the push source.
    sweeping = FAST_SYNC.model_copy(
        update={"sweep_bound_s": 2, "sweep_healthy_bound_s": 2, "sweep_interval_s": 0.5}
    )
    with _deployed(tmp_path, alternative, source, rooms=3, sync=sweeping, push_reconcile_s=2.0) as (
        world,
        rooms,
    ):
        control = world.control
        notification_faults = [
            {"kind": "duplicate", "probability": 0.3},
            {"kind": "reorder", "probability": 0.3},
            {"kind": "delay", "probability": 0.2, "delay_s": 1.0},
            {"kind": "drop", "probability": 0.2},
        ]
        for fault in notification_faults:
            assert control.post("/faults/notifications", json=fault).status_code == 201
        # Each room's next Graph requests fail: a 429 storm, 503s, requests that time out.
        mailbox_faults = [
            {"kind": "throttle", "count": 4, "retry_after_s": 1},
            {"kind": "unavailable", "count": 3, "retry_after_s": 1},
            {"kind": "timeout", "count": 2, "timeout_s": 1.0},
        ]
        for room, fault in zip(rooms, mailbox_faults, strict=True):
            answer = control.post("/faults/mailboxes", json={**fault, "mailbox": room.mailbox})
            assert answer.status_code == 201, answer.text

        expected: dict[str, list[Span]] = {}
        for room in rooms:
            first = room.book((room.at(0, 2), room.at(0, 3)))
            second = room.book((room.at(1, 2), room.at(1, 2.5)))
            moved = (room.at(0, 4), room.at(0, 4.5))
            room.move(first, moved)
            room.control("DELETE", f"/events/{second}")
            expected[room.room_id] = [moved]
        # Every delta token Graph handed out expires: the next round must start over.
        assert control.post("/delta/expire", json={}).status_code == 200
        for room in rooms:
            late = (room.at(2, 3), room.at(2, 3.5))
            room.book(late)
            expected[room.room_id].append(late)

        for room in rooms:
            room.shows(*expected[room.room_id], timeout_s=90)
        faults = control.get("/faults").json()
        fired = {kind: f["fired"] for kind, f in faults["notifications"].items()}
        assert all(count > 0 for count in fired.values()), fired
        assert all(f["fired"] > 0 for f in faults["mailboxes"].values()), faults["mailboxes"]
        counters = control.get("/counters").json()
        assert counters["throttled"] > 0
        assert max(counters["max_concurrency_per_mailbox"].values()) <= 4
