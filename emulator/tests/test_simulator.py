"""The booking simulator: the same seed plays the same story; it books only the chosen rooms,
honours the recurring share, and runs from the control API with notifications flowing."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from loopback_kit import APP_SECRET, START, served

from graph_emulator.auth import READ, App, issue_token
from graph_emulator.config import EmulatorConfig
from graph_emulator.directory import Mailbox
from graph_emulator.simulator import BookingSimulator, SimulatorSettings
from graph_emulator.state import EmulatorState, new_state


def tenant(rooms: int = 4) -> EmulatorState:
    state = new_state(EmulatorConfig(virtual_clock=True, allow_http_notifications=True), seed=21)
    state.clock.advance(START - state.clock.now())
    for n in range(rooms):
        state.directory.add(
            Mailbox(
                id=f"00000000-0000-4000-8000-00000000000{n}",
                upn=f"room-{n}@contoso.example",
                display_name=f"Room {n}",
                is_room=True,
                time_zone="Europe/Berlin",
            )
        )
    for name in ("adele", "megan", "lynne"):
        state.directory.add(
            Mailbox(id=f"{name}-id", upn=f"{name}@contoso.example", display_name=name.title())
        )
    return state


def calendar_story(state: EmulatorState) -> list[tuple[Any, ...]]:
    story = []
    for room in sorted(state.directory.rooms(), key=lambda m: m.upn):
        for event in state.calendars.items(room):
            story.append(
                (
                    room.upn,
                    event.subject,
                    event.start,
                    event.end,
                    event.recurrence is not None,
                    len(event.exceptions),
                    len(event.cancelled),
                )
            )
    return story


def run(state: EmulatorState, steps: int, **settings: Any) -> BookingSimulator:
    simulator = BookingSimulator(state, SimulatorSettings(**settings))
    for _ in range(steps):
        simulator.step()
    return simulator


def test_same_seed_same_story() -> None:
    first, second, other = tenant(), tenant(), tenant()
    a = run(first, 300, seed=42, recurring_share=0.3)
    b = run(second, 300, seed=42, recurring_share=0.3)
    c = run(other, 300, seed=43, recurring_share=0.3)
    assert a.log == b.log
    assert calendar_story(first) == calendar_story(second)
    assert a.log != c.log
    kinds = set(a.actions)
    assert {"book", "cancel", "edit_occurrence", "cancel_occurrence"} <= kinds
    assert kinds & {"move", "edit"}


def test_rooms_subset_and_recurring_share() -> None:
    state = tenant()
    simulator = run(state, 60, seed=7, rooms=["room-1@contoso.example"], recurring_share=1.0)
    booked = {room.upn for room in state.directory.rooms() if state.calendars.items(room)}
    assert booked == {"room-1@contoso.example"}
    room = state.directory.resolve("room-1@contoso.example")
    assert all(e.recurrence is not None for e in state.calendars.items(room))
    assert all(entry["recurring"] for entry in simulator.log if entry["action"] == "book")
    plain = run(tenant(), 60, seed=7, recurring_share=0.0)
    assert not any(entry.get("recurring") for entry in plain.log)
    assert "edit_occurrence" not in plain.actions


async def test_runs_from_the_control_api_and_notifications_flow() -> None:
    state = tenant(rooms=2)
    state.apps.add(App("app-read", APP_SECRET, "reader", roles={READ}))
    async with served(state) as up:
        client, receiver, receiver_url = up.client, up.receiver, up.receiver_url
        app = state.apps.get("app-read")
        assert app is not None
        headers = {"Authorization": f"Bearer {issue_token(state, app)[0]}"}
        subscribed = await client.post(
            "/v1.0/subscriptions",
            headers=headers,
            json={
                "changeType": "created,updated,deleted",
                "notificationUrl": f"{receiver_url}/notify",
                "resource": "users/room-0@contoso.example/events",
                "expirationDateTime": (state.clock.now() + dt.timedelta(days=1)).isoformat(),
            },
        )
        assert subscribed.status_code == 201
        idle = await client.get("/_emulator/simulator")
        assert idle.json() == {"running": False}
        started = await client.post(
            "/_emulator/simulator/start",
            json={
                "seed": 5,
                "rate_per_s": 400,
                "rooms": ["room-0@contoso.example"],
                "recurring_share": 0.25,
                "max_actions": 40,
            },
        )
        assert started.status_code == 201
        assert started.json()["rooms"] == ["room-0@contoso.example"]
        await receiver.wait_for(lambda: receiver.received >= 40)
        status: dict[str, Any] = {}
        for _ in range(100):
            status = (await client.get("/_emulator/simulator")).json()
            if status["total"] == 40 and not status["running"]:
                break
            await asyncio.sleep(0.02)
        assert status["total"] == 40
        assert status["errors"] == 0
        assert status["running"] is False
        stopped = await client.post("/_emulator/simulator/stop")
        assert stopped.json()["running"] is False
        bad = await client.post("/_emulator/simulator/start", json={"rooms": "room-0"})
        assert bad.status_code == 400
        for hours in (0, 25, "3"):
            refused = await client.post(
                "/_emulator/simulator/start", json={"near_now_hours": hours}
            )
            assert refused.status_code == 400, hours
        near = await client.post(
            "/_emulator/simulator/start", json={"near_now_hours": 3, "rate_per_s": 0.01}
        )
        assert near.status_code == 201
        assert near.json()["near_now_hours"] == 3
        no_rooms = await client.post(
            "/_emulator/simulator/start", json={"rooms": ["adele@contoso.example"]}
        )
        assert no_rooms.status_code == 201
        await client.post("/_emulator/simulator/stop")
