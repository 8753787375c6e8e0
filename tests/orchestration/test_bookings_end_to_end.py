"""A booking made, moved, cancelled, and one occurrence of a series edited in "Microsoft 365"
reach the availability API through the whole deployment, for each way in and each event source:

- Alternative 1: the emulator notifies the service; Alternative 2: it notifies the connector's
  relay, which calls the service;
- the worker reads the calendar from Graph with the service's own app (``graph``), from the
  connector (``connector``), or applies the window the relay call carried (``push``; a push
  needs the relay, so it has no Alternative 1).

Every change is made through the emulator's control API and is seen only through notifications
(the reconciliation sweep's bound is far away), as the map platform's reader sees it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from .conftest import FAST
from .world import TENANT, World, deployment, wait_for

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
        return (self.first_night + dt.timedelta(days=day, hours=hour)).astimezone(dt.UTC)

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

    def shows(self, *spans: Span) -> None:
        wait_for(lambda: self.night_busy() == sorted(spans), what=f"availability shows {spans}")

    # --- changes made in the room's calendar, as Exchange makes them --------------------------
    def control(self, method: str, path: str, body: dict[str, object] | None = None) -> dict:
        answer = self.world.control.request(
            method, f"/mailboxes/{self.mailbox}{path}", json=body
        )
        assert answer.status_code in (200, 201, 204), answer.text
        return answer.json() if answer.status_code != 204 else {}

    def book(self, span: Span, **extra: object) -> str:
        organizer = next(m for m in self.world.emulator.state.directory.all() if not m.is_room)
        body = {"organizer": organizer.upn, "subject": "Review", **extra}
        created = self.control("POST", "/bookings", {**body, "start": _z(span[0]), "end": _z(span[1])})
        return str(created["id"])


@pytest.fixture
def reader_of() -> Iterator[dict[str, httpx.Client]]:
    clients: dict[str, httpx.Client] = {}
    yield clients
    for client in clients.values():
        client.close()


@pytest.mark.parametrize(
    ("alternative", "source"), CASES, ids=[f"alt{a}-{source}" for a, source in CASES]
)
def test_booked_moved_cancelled_and_an_edited_occurrence_show_in_availability(
    tmp_path: Path, alternative: int, source: str, reader_of: dict[str, httpx.Client]
) -> None:
    with deployment(
        tmp_path, orchestration=FAST, alternative=alternative, event_source=source
    ) as world:
        mailbox = world.rooms[1]["upn"]
        world.link("hall", mailbox)
        subscription = wait_for(
            lambda: world.graph_subscriptions().get(mailbox), what="subscribed at Graph"
        )
        wait_for(
            lambda: world.health().get(mailbox, {}).get("subscription_id") == subscription["id"],
            what="the service recorded the subscription",
        )
        reader = reader_of["hall"] = httpx.Client(
            base_url=world.service_url,
            headers={"Authorization": f"Bearer {world.read_token}"},
            timeout=30,
        )
        room = Room(world, "hall", mailbox, reader)
        assert room.night_busy() == []

        meeting = (room.at(0, 2), room.at(0, 3))
        booking = room.book(meeting)
        room.shows(meeting)

        moved = (room.at(0, 4), room.at(0, 4.5))
        room.control("POST", f"/events/{booking}/move", {"start": _z(moved[0]), "end": _z(moved[1])})
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

        health = world.health()[mailbox]
        assert health["last_notification_at"] is not None
        assert health["state"] == "healthy"
