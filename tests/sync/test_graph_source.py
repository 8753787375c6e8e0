"""The graph source against the real emulator: MSAL for tokens, Graph over httpx."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable

import pytest

from bookingcache.clock import FixedClock
from bookingcache.domain.events import BasicEvent
from bookingcache.domain.tenancy import CalendarState
from bookingcache.errors import Throttled, UpstreamError
from bookingcache.sync.sources.graph import GraphSource
from graph_emulator.config import EmulatorConfig

from .emulated import TENANT, Emulated, emulate

START = dt.datetime(2026, 3, 16, 6, 0, tzinfo=dt.UTC)
WINDOW = (dt.datetime(2026, 3, 16, tzinfo=dt.UTC), dt.datetime(2026, 3, 30, tzinfo=dt.UTC))

SourceFactory = Callable[..., GraphSource]


@pytest.fixture
def emulator() -> Emulated:
    return emulate(rooms=3, start=START)


@pytest.fixture
async def make_source(emulator: Emulated) -> AsyncIterator[SourceFactory]:
    made: list[GraphSource] = []

    def make(**settings: object) -> GraphSource:
        source = GraphSource(
            emulator.settings(**settings),  # type: ignore[arg-type]
            clock=FixedClock(START),
            transport=emulator.transport,
        )
        made.append(source)
        return source

    yield make
    for source in made:
        await source.aclose()


def _calendar(emulator: Emulated, index: int = 0) -> CalendarState:
    return CalendarState(tenant_id=TENANT, mailbox=emulator.rooms[index].upn, time_zone="UTC")


def _seen(events: object) -> set[tuple[str, dt.datetime, dt.datetime, bool]]:
    assert isinstance(events, list)
    result = set()
    for event in events:
        assert isinstance(event, BasicEvent)
        result.add((event.id, event.start, event.end, event.is_cancelled))
    return result


def _fill(emulator: Emulated, index: int = 0) -> list[str]:
    room = emulator.rooms[index]
    day = WINDOW[0]
    ids = [
        emulator.book(room, day + dt.timedelta(hours=9), 60),
        emulator.book(room, day + dt.timedelta(days=1, hours=13), 30),
        emulator.book(
            room,
            day + dt.timedelta(hours=15),
            30,
            recurrence={
                "pattern": {"type": "daily", "interval": 1},
                "range": {
                    "type": "numbered",
                    "startDate": day.date().isoformat(),
                    "numberOfOccurrences": 5,
                },
            },
        ),
    ]
    return ids


async def test_delta_first_round_then_incremental_rounds(
    emulator: Emulated, make_source: SourceFactory
) -> None:
    ids = _fill(emulator)
    room = emulator.rooms[0]
    source = make_source(page_size=100)
    start, end = WINDOW
    first = await source.read_window(_calendar(emulator), start=start, end=end)
    assert _seen(first) == emulator.truth(room, start, end)
    assert len(_seen(first)) == 2 + 5  # occurrences expanded, master left out
    before = emulator.requests(room)
    assert before == 1
    # A move, a cancellation by deletion, one edited occurrence: one delta page brings them.
    emulator.move(room, ids[0], start + dt.timedelta(days=2, hours=8), 45)
    emulator.state.calendars.delete_event(room.id, ids[1])
    occurrence = next(
        i for i in emulator.state.calendars.instances(room, start, end) if i.type == "occurrence"
    )
    emulator.state.calendars.update_event(
        room.id,
        occurrence.id,
        {
            "start": {"dateTime": "2026-03-16T16:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-03-16T16:30:00", "timeZone": "UTC"},
        },
    )
    second = await source.read_window(_calendar(emulator), start=start, end=end)
    assert _seen(second) == emulator.truth(room, start, end)
    assert emulator.requests(room) - before == 1
    # Nothing changed: still the whole window, from one request.
    third = await source.read_window(_calendar(emulator), start=start, end=end)
    assert _seen(third) == _seen(second)
    assert emulator.requests(room) - before == 2


async def test_delta_rounds_follow_every_page(
    emulator: Emulated, make_source: SourceFactory
) -> None:
    _fill(emulator)
    room = emulator.rooms[0]
    source = make_source(page_size=3)
    events = await source.read_window(_calendar(emulator), start=WINDOW[0], end=WINDOW[1])
    assert _seen(events) == emulator.truth(room, *WINDOW)
    assert emulator.requests(room) == 3  # 7 instances in pages of 3


async def test_expired_delta_token_falls_back_to_a_full_round(
    emulator: Emulated, make_source: SourceFactory
) -> None:
    _fill(emulator)
    room = emulator.rooms[0]
    source = make_source()
    start, end = WINDOW
    await source.read_window(_calendar(emulator), start=start, end=end)
    assert emulator.state.delta.expire(mailbox_id=room.id) >= 1
    emulator.book(room, start + dt.timedelta(days=3, hours=10), 60)
    events = await source.read_window(_calendar(emulator), start=start, end=end)
    assert _seen(events) == emulator.truth(room, start, end)


async def test_a_token_of_another_window_is_not_reused(
    emulator: Emulated, make_source: SourceFactory
) -> None:
    _fill(emulator)
    room = emulator.rooms[0]
    source = make_source()
    start, end = WINDOW
    await source.read_window(_calendar(emulator), start=start, end=end)
    later = (start + dt.timedelta(days=1), end + dt.timedelta(days=1))
    events = await source.read_window(_calendar(emulator), start=later[0], end=later[1])
    assert _seen(events) == emulator.truth(room, *later)


async def test_read_basic_uses_plain_calendar_view_and_follows_every_page(
    emulator: Emulated, make_source: SourceFactory
) -> None:
    _fill(emulator)
    room = emulator.rooms[0]
    source = make_source(app="readbasic", page_size=2)
    start, end = WINDOW
    events = await source.read_window(_calendar(emulator), start=start, end=end)
    assert _seen(events) == emulator.truth(room, start, end)
    assert emulator.requests(room) == 4  # 7 instances in pages of 2


async def test_read_basic_app_is_refused_delta_by_graph(
    emulator: Emulated, make_source: SourceFactory
) -> None:
    _fill(emulator)
    # Misconfigured as holding Calendars.Read: Graph refuses delta, the refresh fails loudly.
    source = make_source(app="readbasic")
    source._settings.tenants[TENANT].permission = "read"
    with pytest.raises(UpstreamError):
        await source.read_window(_calendar(emulator), start=WINDOW[0], end=WINDOW[1])


async def test_throttling_surfaces_retry_after(
    emulator: Emulated, make_source: SourceFactory
) -> None:
    room = emulator.rooms[0]
    emulator.faults.set_mailbox_fault(room.id, "throttle", count=1, retry_after_s=7)
    source = make_source()
    with pytest.raises(Throttled) as raised:
        await source.read_window(_calendar(emulator), start=WINDOW[0], end=WINDOW[1])
    assert raised.value.retry_after_s == 7
    emulator.faults.set_mailbox_fault(room.id, "unavailable", count=1, retry_after_s=3)
    with pytest.raises(Throttled) as again:
        await source.read_window(_calendar(emulator), start=WINDOW[0], end=WINDOW[1])
    assert again.value.retry_after_s == 3
    events = await source.read_window(_calendar(emulator), start=WINDOW[0], end=WINDOW[1])
    assert events == []


async def test_never_more_than_four_concurrent_requests_per_mailbox() -> None:
    emulator = emulate(rooms=1, start=START, config=EmulatorConfig(mailbox_latency_s=0.05))
    _fill(emulator)
    source = GraphSource(
        emulator.settings(app="readbasic", page_size=1),
        clock=FixedClock(START),
        transport=emulator.transport,
    )
    try:
        reads = [
            source.read_window(_calendar(emulator), start=WINDOW[0], end=WINDOW[1])
            for _ in range(10)
        ]
        results = await asyncio.gather(*reads)
    finally:
        await source.aclose()
    room = emulator.rooms[0]
    assert all(_seen(result) == emulator.truth(room, *WINDOW) for result in results)
    assert emulator.state.counters.max_concurrency_per_mailbox[room.id] == 4
    assert emulator.state.counters.throttled == 0


async def test_wrong_secret_is_an_upstream_error(
    emulator: Emulated, make_source: SourceFactory
) -> None:
    source = make_source()
    source._settings.client_secret = source._settings.client_secret.__class__("wrong")
    with pytest.raises(UpstreamError, match="invalid_client"):
        await source.read_window(_calendar(emulator), start=WINDOW[0], end=WINDOW[1])


async def test_a_token_graph_no_longer_accepts_is_replaced(
    emulator: Emulated, make_source: SourceFactory
) -> None:
    _fill(emulator)
    room = emulator.rooms[0]
    source = make_source()
    await source.read_window(_calendar(emulator), start=WINDOW[0], end=WINDOW[1])
    # Two hours later by the directory's clock: MSAL's cached token is expired there.
    emulator.state.clock.advance(dt.timedelta(hours=2))
    emulator.book(room, WINDOW[0] + dt.timedelta(days=4, hours=9), 30)
    events = await source.read_window(_calendar(emulator), start=WINDOW[0], end=WINDOW[1])
    assert _seen(events) == emulator.truth(room, *WINDOW)
