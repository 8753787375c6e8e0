"""The live availability page in a real browser (Debian's chromium through Playwright) against
the demo's real processes (tests/page/conftest.py), one demo and one tab for the module:

- every room of a floor is drawn, on the plan and as tiles, with its status in words;
- a booking made in the emulator turns its room busy on the open page within 2 s, without a
  reload, and its cancellation turns it free again;
- the service is killed and restarted: the page says the connection is lost, reconnects with a
  fresh ticket and the last change it saw, and shows the change made while it was away;
- the free-room search and the keyboard work; the page fits a phone and the lobby display;
- the read token never appears in a URL and the page's policy is never violated.

``BOOKINGCACHE_UPDATE_SCREENSHOT=1`` also writes the screenshot to ``docs/live-page.png``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from playwright import sync_api as playwright_api
from playwright.sync_api import Route

from tests.support.live_page import OCCUPIED, World, floor_rooms

pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parents[2] / "docs"
# Read before the demo's fixture takes BOOKINGCACHE_* out of the environment.
UPDATE_SCREENSHOT = os.environ.get("BOOKINGCACHE_UPDATE_SCREENSHOT") == "1"


def test_every_room_of_a_floor_as_a_plan_and_as_tiles(world: World, tmp_path: Path) -> None:
    rooms = floor_rooms(world, "Harbour House", "1")
    assert rooms
    assert all(room["geometry"] for room in rooms)
    world.open_floor("Harbour House", "1")
    page = world.page
    drawn = page.locator("#plan g.room")
    assert drawn.count() == len(rooms)
    labels = [drawn.nth(i).get_attribute("aria-label") or "" for i in range(drawn.count())]
    for room in rooms:
        [label] = [text for text in labels if text.startswith(room["name"])]
        # The status in words: colour is never the only cue.
        assert any(word in label for word in ("Free", "Busy", "Tentative", "Out of office"))
        if room["capacity"] is not None:
            assert f"{room['capacity']} seats" in label
    shot = tmp_path / "live-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if UPDATE_SCREENSHOT:
        shutil.copyfile(shot, DOCS / "live-page.png")
    page.check("#view-tiles")
    tiles = page.locator("#tiles button")
    assert tiles.count() == len(rooms)
    assert sorted(tiles.nth(i).get_attribute("data-room") for i in range(len(rooms))) == sorted(
        room["id"] for room in rooms
    )
    # Each tile has the room's day: a timeline with its text alternative.
    assert page.locator("#tiles .timeline-box[role=img]").count() == len(rooms)
    page.check("#view-plan")
    world.check_clean()


def test_a_booking_shows_within_two_seconds_and_its_cancellation_too(world: World) -> None:
    room = world.quiet_room()
    world.open_floor(room["building"], room["floor"])
    world.wait_live()
    page = world.page
    here = world.room_selector(room["room_id"])
    assert page.get_attribute(here, "data-status") == "free"
    event_id = world.book(room["mailbox"])
    occupied = ", ".join(f'{here}[data-status="{s}"]' for s in OCCUPIED)
    page.wait_for_selector(occupied, timeout=2_000)
    label = page.get_attribute(here, "aria-label") or ""
    # Said in words too, with the room's name and seats first.
    assert label.split(": ", 1)[1].startswith(("Busy", "Tentative")), label
    world.cancel(room["mailbox"], event_id)
    page.wait_for_selector(f'{here}[data-status="free"]', timeout=2_000)
    world.check_clean()


def test_the_page_reconnects_after_a_restart_and_misses_nothing(world: World) -> None:
    room = world.quiet_room()
    world.open_floor(room["building"], room["floor"])
    world.wait_live()
    page = world.page
    here = world.room_selector(room["room_id"])
    [service] = [c for c in world.demo.children if c.name == "service"]
    world.demo.port = urlsplit(world.url).port or 0
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if "/stream?" in r.url else None)

    service.kill()
    world.demo.children.remove(service)
    page.wait_for_selector("#connection:not([hidden])", timeout=5_000)
    assert "reconnecting" in page.inner_text("#connection").lower()
    event_id = world.book(room["mailbox"])

    # Hold the page's streams back until the restarted service has the change: the page must
    # then learn it from the stream it resumes, not from one it was already on.
    def refuse(route: Route) -> None:
        route.abort()

    page.route("**/stream?*", refuse)
    world.demo.start_service(str(world.info["admin_token"]))
    deadline = time.monotonic() + 90
    while world.status(room["room_id"])["status"] not in OCCUPIED:
        assert time.monotonic() < deadline, "the restarted service never read the booking"
        time.sleep(0.5)
    assert page.is_visible("#connection")
    assert page.get_attribute(here, "data-status") == "free"
    resumed_from = len(streams)
    page.unroute("**/stream?*", refuse)

    page.wait_for_selector("#connection", state="hidden", timeout=10_000)
    world.wait_live()
    page.wait_for_selector(", ".join(f'{here}[data-status="{s}"]' for s in OCCUPIED), timeout=2_000)
    # It resumed where it was: a fresh ticket, and the last change it had seen.
    resumed = streams[resumed_from:]
    assert resumed
    assert all("ticket=" in url and "last_event_id=" in url for url in resumed)
    world.cancel(room["mailbox"], event_id)
    page.wait_for_selector(f'{here}[data-status="free"]', timeout=2_000)
    world.check_clean()


def test_the_free_room_search(world: World) -> None:
    world.open_floor("Harbour House", "1")
    page = world.page
    free = world.api.get(
        "/v1/tenants/demo/rooms:free",
        params={"minutes": 30, "capacity": 6, "building": "Harbour House", "floor": "1"},
    )
    assert free.status_code == 200, free.text
    expected = {room["id"] for room in free.json()["rooms"]}
    page.fill("#filter-minutes", "30")
    page.fill("#filter-capacity", "6")
    page.click("#filter button[type=submit]")
    page.wait_for_selector("#filter-result p")
    found = {
        button.get_attribute("data-room")
        for button in page.locator("#filter-result .matches button").all()
    }
    assert found == expected
    dimmed = {g.get_attribute("data-room") for g in page.locator("#plan g.room.dimmed").all()}
    drawn = {g.get_attribute("data-room") for g in page.locator("#plan g.room").all()}
    assert dimmed == drawn - expected
    # Bad input is said, not sent.
    page.fill("#filter-minutes", "0")
    page.click("#filter button[type=submit]")
    page.wait_for_selector("#filter-result .error")
    page.click("#filter-clear")
    assert page.locator("#plan g.room.dimmed").count() == 0
    world.check_clean()


def test_keyboard_navigation_and_accessible_names(world: World) -> None:
    world.open_floor("Harbour House", "1")
    page = world.page
    page.locator("body").focus()
    # Tab through the page to the first room; everything reached has an accessible name.
    reached: list[dict[str, Any]] = []
    for _ in range(60):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            """() => { const e = document.activeElement;
                return {tag: e.tagName, room: e.getAttribute('data-room'),
                        name: e.getAttribute('aria-label') || e.labels?.[0]?.textContent
                              || e.textContent.trim()}; }"""
        )
        reached.append(focused)
        if focused["tag"] == "g" and focused["room"]:
            break
    else:
        raise AssertionError(f"no room reached by keyboard: {reached}")
    assert all(item["name"] for item in reached), reached
    room = reached[-1]["room"]
    page.keyboard.press("Enter")
    page.wait_for_selector("#details:not([hidden])")
    heading = page.evaluate("document.activeElement.id")
    assert heading == "details-heading"
    assert reached[-1]["name"].startswith(page.inner_text("#details-heading"))
    page.keyboard.press("Escape")
    page.wait_for_selector("#details", state="hidden")
    assert page.evaluate("document.activeElement.getAttribute('data-room')") == room
    # Floors are links: the keyboard takes the page to another floor.
    page.focus('#floors a:has-text("Floor 2")')
    page.keyboard.press("Enter")
    playwright_api.expect(page.locator("#rooms-heading")).to_have_text(re.compile("floor 2$"))
    world.check_clean()


def test_a_phone_and_the_lobby_display(world: World) -> None:
    page = world.page
    try:
        page.set_viewport_size({"width": 390, "height": 844})
        world.open_floor("Harbour House", "1")
        # Tiles on a narrow screen, and nothing wider than it.
        assert page.locator("#tiles button").count() > 0
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.set_viewport_size({"width": 1920, "height": 1080})
        page.goto(
            world.url
            + "/?display=kiosk"
            + world.floor_url("Harbour House", "1")[len(world.url) + 1 :]
        )
        page.wait_for_selector("#plan g.room")
        assert page.evaluate("document.body.classList.contains('kiosk')")
        assert not page.is_visible("#filter")
        assert page.get_attribute("#kiosk-toggle", "aria-pressed") == "true"
        # The header clock tells the floor's time as the rooms do: their zone, 24-hour.
        room = floor_rooms(world, "Harbour House", "1")[0]
        zone = ZoneInfo(world.status(room["id"])["time_zone"])
        now = dt.datetime.now(zone)
        shown = page.text_content("#clock")
        assert shown in {f"{moment:%H:%M}" for moment in (now - dt.timedelta(minutes=1), now)}, (
            shown
        )
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})
    world.check_clean()
