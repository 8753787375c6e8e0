"""The live availability page in a real browser (Debian's chromium through Playwright) against
the demo's real processes (tests/page/conftest.py): every room of a floor is drawn, on the plan
and as tiles, with its status in words; the free-room search and the keyboard work; the page fits
a phone and the lobby display; the read token never appears in a URL and the page's policy is
never violated.

``BOOKINGCACHE_UPDATE_SCREENSHOT=1`` also writes the screenshot to ``docs/live-page.png``.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from playwright import sync_api as playwright_api

from tests.support.live_page import World, floor_rooms

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
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})
    world.check_clean()
