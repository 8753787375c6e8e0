"""The ``live`` seed and the simulator's near-now mode make a demo look alive whatever the day
and hour: rooms are taken now and free now, some change within the quarter hour, and the
simulator changes what rooms are doing now within a few actions, keeping about half busy."""

from __future__ import annotations

import datetime as dt

import pytest

from graph_emulator.clock import Clock
from graph_emulator.directory import Mailbox
from graph_emulator.seed import seed_demo
from graph_emulator.simulator import BookingSimulator, SimulatorSettings
from graph_emulator.state import EmulatorState, new_state

UTC = dt.UTC
MOMENTS = {
    "saturday-afternoon": dt.datetime(2026, 12, 5, 14, 20, tzinfo=UTC),
    "sunday-night": dt.datetime(2026, 12, 6, 23, 10, tzinfo=UTC),
    "wednesday-morning": dt.datetime(2026, 12, 9, 9, 5, tzinfo=UTC),
    "europe-fall-back": dt.datetime(2026, 10, 25, 0, 45, tzinfo=UTC),
}

# Not marked ``pinned_dates``: every test here runs on a virtual clock started at the moments
# above, so .ci/pinned-dates would only repeat them.


def live(now: dt.datetime, seed: int = 3) -> EmulatorState:
    state = new_state(seed=seed, clock=Clock(virtual=True, start=now))
    seed_demo(state, around_now=True)
    return state


def busy_at(state: EmulatorState, room: Mailbox, at: dt.datetime) -> bool:
    return any(
        not i.field("isCancelled") and i.field("showAs") in ("busy", "tentative", "oof")
        for i in state.calendars.instances(room, at, at + dt.timedelta(seconds=1))
    )


def busy_rooms(state: EmulatorState, at: dt.datetime) -> set[str]:
    return {room.upn for room in state.directory.rooms() if busy_at(state, room, at)}


@pytest.mark.parametrize("moment", MOMENTS.values(), ids=MOMENTS.keys())
def test_the_live_seed_has_rooms_busy_and_free_now_and_changing_soon(moment: dt.datetime) -> None:
    state = live(moment)
    rooms = state.directory.rooms()
    busy = busy_rooms(state, moment)
    assert len(rooms) / 4 <= len(busy) <= len(rooms) * 3 / 4, len(busy)
    soon = moment + dt.timedelta(minutes=15)
    changing = {room.upn for room in rooms if busy_at(state, room, soon) != (room.upn in busy)}
    assert len(changing) >= 3, changing
    # ... and meetings are booked for the hours to come, in most rooms' timelines.
    later = moment + dt.timedelta(hours=4)
    booked = [room for room in rooms if state.calendars.instances(room, moment, later)]
    assert len(booked) >= len(rooms) * 3 / 4


def test_the_plain_demo_seed_is_unchanged_by_the_live_one() -> None:
    """Without ``around_now`` the seed is the one tests and benchmarks know: on a Saturday,
    no room is taken."""
    moment = MOMENTS["saturday-afternoon"]
    plain = new_state(seed=3, clock=Clock(virtual=True, start=moment))
    seed_demo(plain)
    assert busy_rooms(plain, moment) == set()


@pytest.mark.parametrize("moment", MOMENTS.values(), ids=MOMENTS.keys())
def test_the_near_now_simulator_changes_rooms_now(moment: dt.datetime) -> None:
    state = live(moment)
    rooms = len(state.directory.rooms())
    simulator = BookingSimulator(state, SimulatorSettings(seed=5, near_now_hours=3))
    before = busy_rooms(state, moment)
    for _ in range(10):
        simulator.step()
    after = busy_rooms(state, moment)
    assert len(before ^ after) >= 3, simulator.log
    # Over a longer run, about half the rooms stay busy: it neither fills nor empties the floor.
    shares = []
    for _ in range(300):
        simulator.step()
        shares.append(len(busy_rooms(state, moment)) / rooms)
    assert min(shares[100:]) >= 0.3, shares
    assert max(shares[100:]) <= 0.75, shares
    assert {"book_now", "cancel_now", "book_later", "cancel_later"} <= set(simulator.actions)
    # Every meeting it booked starts from now to the hours ahead, whatever the hour of the day.
    for entry in simulator.log:
        if entry["action"] in ("book_now", "book_later", "move"):
            start = dt.datetime.fromisoformat(entry["start"]).replace(tzinfo=UTC)
            assert moment - dt.timedelta(minutes=1) <= start <= moment + dt.timedelta(hours=3)
