"""The live availability page's browser tests share one world: the demo's real processes (the
Graph emulator, the customer's connector and the service, started as ``bookingcache demo``
starts them), clients of the service and of the emulator's control API, and one signed-in
browser tab (tests/page/conftest.py builds it)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from playwright.sync_api import Page

from bookingcache.tools.demo import Demo

OCCUPIED = ("busy", "tentative")
# Collects every policy violation the page reports, from before its first script runs.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__violations.push({directive: e.violatedDirective, blocked: e.blockedURI});
});
"""


@dataclass
class World:
    demo: Demo
    info: dict[str, Any]
    api: httpx.Client  # the read token's view of the service
    admin: httpx.Client
    control: httpx.Client  # the emulator's control API
    page: Page
    urls: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return str(self.info["service_url"])

    def floor_url(self, building: str, floor: str) -> str:
        return f"{self.url}/#/{quote(building, safe='')}/{quote(floor, safe='')}"

    def room_selector(self, room: str, where: str = "#plan g") -> str:
        return f'{where}[data-room="{room}"]'

    def status(self, room: str) -> dict[str, Any]:
        answer = self.api.get(f"/v1/tenants/demo/rooms/{room}/availability")
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    def quiet_room(self) -> dict[str, Any]:
        """A room with a floor-plan shape, free now and for the next 75 minutes at least."""
        now = dt.datetime.now(dt.UTC)
        answer = self.api.post("/v1/tenants/demo/availability", json={"rooms": self.info["rooms"]})
        for room in answer.json()["rooms"]:
            change = room["next_change_at"]
            if room["status"] == "free" and (
                change is None or dt.datetime.fromisoformat(change) > now + dt.timedelta(minutes=75)
            ):
                return {**room, "mailbox": self.mailbox(room["room_id"])}
        raise AssertionError("no room is free for the next 75 minutes")

    def mailbox(self, room: str) -> str:
        mailbox: str = self.admin.get(f"/v1/tenants/demo/rooms/{room}").json()["mailbox"]
        return mailbox

    def book(self, mailbox: str, minutes: int = 60) -> str:
        start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=1)
        booked = self.control.post(
            f"/mailboxes/{mailbox}/bookings",
            json={
                "organizer": "kari.nordmann@contoso.example",
                "start": start.isoformat().replace("+00:00", "Z"),
                "end": (start + dt.timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z"),
                "subject": "Browser check",
            },
        )
        assert booked.status_code in (200, 201), booked.text
        event_id: str = booked.json()["id"]
        return event_id

    def cancel(self, mailbox: str, event_id: str) -> None:
        cancelled = self.control.delete(f"/mailboxes/{mailbox}/events/{event_id}")
        assert cancelled.status_code in (200, 204), cancelled.text

    def open_floor(self, building: str, floor: str) -> None:
        """The floor, loaded afresh (as after a reload: the tab keeps its sign-in)."""
        self.page.goto(self.floor_url(building, floor))
        # A change of the fragment alone would keep the page: load it anew.
        self.page.reload()
        self.page.wait_for_selector("#floor[aria-busy=false]", timeout=10_000)

    def wait_live(self) -> None:
        """Until the floor follows the stream: its snapshot is in, or its stream resumed."""
        self.page.wait_for_selector("#floor[data-live=true]", timeout=10_000)

    def check_clean(self) -> None:
        """The read token stayed out of every URL; the page's policy was never violated."""
        token = str(self.info["read_token"])
        assert not [url for url in self.urls if token in url]
        assert self.page.evaluate("window.__violations") == []


def floor_rooms(world: World, building: str, floor: str) -> list[dict[str, Any]]:
    answer = world.api.get(
        "/v1/tenants/demo/map/rooms", params={"building": building, "floor": floor}
    )
    assert answer.status_code == 200, answer.text
    rooms: list[dict[str, Any]] = answer.json()["rooms"]
    return rooms
