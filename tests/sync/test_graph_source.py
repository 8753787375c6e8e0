"""The graph source against the real emulator: MSAL for tokens, Graph over httpx."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Callable

import pytest

from bookingcache.clock import FixedClock
from bookingcache.domain.events import BasicEvent
from bookingcache.domain.tenancy import (
    CalendarState,
    EventSource,
    GraphAccess,
    GraphCredential,
    GraphPermission,
)
from bookingcache.errors import Throttled, UpstreamError
from bookingcache.store.sql.store import SqlStore
from bookingcache.sync.sources.graph import GraphSource
from graph_emulator.config import EmulatorConfig
from graph_emulator.directory import Mailbox
from tests.support.tenants import add_tenant

from .emulated import TENANT, Emulated, emulate

START = dt.datetime(2026, 3, 16, 6, 0, tzinfo=dt.UTC)
WINDOW = (dt.datetime(2026, 3, 16, tzinfo=dt.UTC), dt.datetime(2026, 3, 30, tzinfo=dt.UTC))

SourceFactory = Callable[..., GraphSource]


@pytest.fixture
def emulator() -> Emulated:
    return emulate(rooms=3, start=START)


@pytest.fixture
async def make_source(emulator: Emulated, store: SqlStore) -> AsyncIterator[SourceFactory]:
    """Sources reading the store's graph tenant (its access read again at every read)."""
    await add_tenant(
        store, source=EventSource.GRAPH, connector_url=None, rooms=0, graph=emulator.access
    )
    made: list[GraphSource] = []

    def make(**settings: object) -> GraphSource:
        source = GraphSource(
            emulator.settings(**settings),  # type: ignore[arg-type]
            clock=FixedClock(START),
            transport=emulator.transport,
            store=store,
            access_refresh_s=0,
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
    # The edited occurrence's master arrives changed too, so a fresh round follows the delta
    # page (see the next test): two requests.
    assert emulator.requests(room) - before == 2
    # Nothing changed: still the whole window, from one request.
    third = await source.read_window(_calendar(emulator), start=start, end=end)
    assert _seen(third) == _seen(second)
    assert emulator.requests(room) - before == 3


async def test_an_occurrence_cancelled_in_a_series_is_gone_after_the_next_round(
    emulator: Emulated, make_source: SourceFactory
) -> None:
    """Graph reports a series whose occurrence was cancelled by sending its master changed, not
    the occurrence as removed: the source then reads the window whole."""
    ids = _fill(emulator)
    room = emulator.rooms[0]
    source = make_source(page_size=100)
    start, end = WINDOW
    first = await source.read_window(_calendar(emulator), start=start, end=end)
    assert len(_seen(first)) == 2 + 5
    occurrence = next(
        i for i in emulator.state.calendars.instances(room, start, end) if i.type == "occurrence"
    )
    emulator.state.calendars.delete_event(room.id, occurrence.id)
    before = emulator.requests(room)
    second = await source.read_window(_calendar(emulator), start=start, end=end)
    assert occurrence.id not in {event.id for event in second}
    assert _seen(second) == emulator.truth(room, start, end)
    assert len(_seen(second)) == 2 + 4
    assert emulator.requests(room) - before == 2
    # A change that touches no series stays one delta page.
    emulator.move(room, ids[0], start + dt.timedelta(days=2, hours=8), 45)
    third = await source.read_window(_calendar(emulator), start=start, end=end)
    assert _seen(third) == emulator.truth(room, start, end)
    assert emulator.requests(room) - before == 3


async def _read_once(emulator: Emulated, make_source: SourceFactory) -> tuple[Mailbox, GraphSource]:
    """The first room filled and its window read once by a new source (a full round, which
    leaves a delta link): the room and the source."""
    _fill(emulator)
    source = make_source()
    await source.read_window(_calendar(emulator), start=WINDOW[0], end=WINDOW[1])
    return emulator.rooms[0], source


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
    room, source = await _read_once(emulator, make_source)
    start, end = WINDOW
    assert emulator.state.delta.expire(mailbox_id=room.id) >= 1
    emulator.book(room, start + dt.timedelta(days=3, hours=10), 60)
    events = await source.read_window(_calendar(emulator), start=start, end=end)
    assert _seen(events) == emulator.truth(room, start, end)


async def test_a_token_of_another_window_is_not_reused(
    emulator: Emulated, make_source: SourceFactory
) -> None:
    room, source = await _read_once(emulator, make_source)
    start, end = WINDOW
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
    emulator: Emulated, make_source: SourceFactory, store: SqlStore
) -> None:
    _fill(emulator)
    # Misconfigured as holding Calendars.Read: Graph refuses delta, the refresh fails loudly.
    source = make_source(app="readbasic")
    access = dataclasses.replace(emulator.access, permission=GraphPermission.READ)
    await store.update_tenant(TENANT, {"graph": access})
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


async def test_never_more_than_four_concurrent_requests_per_mailbox(store: SqlStore) -> None:
    emulator = emulate(rooms=1, start=START, config=EmulatorConfig(mailbox_latency_s=0.05))
    _fill(emulator)
    await add_tenant(
        store, source=EventSource.GRAPH, connector_url=None, rooms=0, graph=emulator.access
    )
    source = GraphSource(
        emulator.settings(app="readbasic", page_size=1),
        clock=FixedClock(START),
        transport=emulator.transport,
        store=store,
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


async def test_a_tenants_own_app_and_its_new_secret_are_used_at_once(
    emulator: Emulated, make_source: SourceFactory, store: SqlStore
) -> None:
    """The tenant's own app (set through the admin API) replaces the shared one; a changed
    secret builds a new MSAL app at the next read, whatever the old one had cached."""
    _fill(emulator)
    room = emulator.rooms[0]
    own = emulator.apps["full"]
    source = make_source()
    source._settings.client_secret = source._settings.client_secret.__class__("not-shared")
    access = GraphAccess(directory_tenant=emulator.state.tenant_id, client_id=own.client_id)
    await store.update_tenant(
        TENANT,
        {"graph": access, "graph_credential": GraphCredential(client_secret=own.client_secret)},
    )
    events = await source.read_window(_calendar(emulator), start=WINDOW[0], end=WINDOW[1])
    assert _seen(events) == emulator.truth(room, *WINDOW)
    wrong = GraphCredential(client_secret="rotated-away")
    await store.update_tenant(TENANT, {"graph": access, "graph_credential": wrong})
    with pytest.raises(UpstreamError, match="invalid_client"):
        await source.read_window(_calendar(emulator), start=WINDOW[0], end=WINDOW[1])
    right = GraphCredential(client_secret=own.client_secret)
    await store.update_tenant(TENANT, {"graph": access, "graph_credential": right})
    events = await source.read_window(_calendar(emulator), start=WINDOW[0], end=WINDOW[1])
    assert _seen(events) == emulator.truth(room, *WINDOW)


async def test_a_tenant_without_graph_access_is_not_configured(
    emulator: Emulated, make_source: SourceFactory, store: SqlStore
) -> None:
    source = make_source()
    await store.update_tenant(TENANT, {"graph": None})
    with pytest.raises(UpstreamError) as raised:
        await source.read_window(_calendar(emulator), start=WINDOW[0], end=WINDOW[1])
    assert raised.value.kind == "graph-not-configured"


async def test_a_token_graph_no_longer_accepts_is_replaced(
    emulator: Emulated, make_source: SourceFactory
) -> None:
    room, source = await _read_once(emulator, make_source)
    # Two hours later by the directory's clock: MSAL's cached token is expired there.
    emulator.state.clock.advance(dt.timedelta(hours=2))
    emulator.book(room, WINDOW[0] + dt.timedelta(days=4, hours=9), 30)
    events = await source.read_window(_calendar(emulator), start=WINDOW[0], end=WINDOW[1])
    assert _seen(events) == emulator.truth(room, *WINDOW)


# --- the delta link stored with the window ---------------------------------------------------


async def _refresh(source: GraphSource, store: SqlStore, room: str) -> set[str]:
    """What the worker does: read the window from the stored calendar row, then store the
    events and the round's delta link in one replace_window."""
    calendar = await store.get_calendar(TENANT, room)
    events = await source.read_window(calendar, start=WINDOW[0], end=WINDOW[1])
    assert events is not None
    await store.replace_window(
        TENANT,
        room,
        window_start=WINDOW[0],
        window_end=WINDOW[1],
        events=events,
        synced_at=START,
        delta_link=source.delta_link_of(TENANT, room),
    )
    cached = await store.events_in_window(TENANT, [room], start=WINDOW[0], end=WINDOW[1])
    return {event.id for event in cached[room]}


@pytest.fixture
async def stored_source(
    emulator: Emulated, store: SqlStore
) -> AsyncIterator[Callable[[], GraphSource]]:
    await add_tenant(store, source=EventSource.GRAPH, connector_url=None, graph=emulator.access)
    made: list[GraphSource] = []

    def make() -> GraphSource:
        # page_size 2: a full read of _fill's 7 instances takes several requests, a delta
        # round with a change or two one.
        made.append(
            GraphSource(
                emulator.settings(page_size=2),
                clock=FixedClock(START),
                transport=emulator.transport,
                store=store,
            )
        )
        return made[-1]

    yield make
    for source in made:
        await source.aclose()


def _truth_ids(emulator: Emulated, room: Mailbox) -> set[str]:
    return {instance[0] for instance in emulator.truth(room, *WINDOW)}


async def test_a_restart_continues_from_the_stored_delta_link(
    emulator: Emulated, store: SqlStore, stored_source: Callable[[], GraphSource]
) -> None:
    ids = _fill(emulator)
    room = emulator.rooms[0]
    first = stored_source()
    assert await _refresh(first, store, room.upn) == _truth_ids(emulator, room)
    full = emulator.requests(room)
    assert full >= 3
    stored = await store.get_calendar(TENANT, room.upn)
    assert stored.extra["delta_link"] == first.delta_link_of(TENANT, room.upn)
    await first.aclose()
    # The process restarts; meanwhile a booking moves and another is deleted.
    emulator.move(room, ids[0], WINDOW[0] + dt.timedelta(days=2, hours=8), 45)
    emulator.state.calendars.delete_event(room.id, ids[1])
    restarted = stored_source()
    assert await _refresh(restarted, store, room.upn) == _truth_ids(emulator, room)
    assert emulator.requests(room) == full + 1  # one delta round on the stored events
    cached = await store.events_in_window(TENANT, [room.upn], start=WINDOW[0], end=WINDOW[1])
    assert _seen(cached[room.upn]) == emulator.truth(room, *WINDOW)
    # And the link moved on with the events: another restart, nothing changed, one request.
    assert (await store.get_calendar(TENANT, room.upn)).extra["delta_link"] != stored.extra[
        "delta_link"
    ]
    again = stored_source()
    assert await _refresh(again, store, room.upn) == _truth_ids(emulator, room)
    assert emulator.requests(room) == full + 2


async def test_a_stored_link_refused_or_forgotten_gives_a_full_read(
    emulator: Emulated, store: SqlStore, stored_source: Callable[[], GraphSource]
) -> None:
    _fill(emulator)
    room = emulator.rooms[0]
    await _refresh(stored_source(), store, room.upn)
    full = emulator.requests(room)
    assert full >= 3
    # Graph dropped the sync state while the service was down: 410, then a full round.
    assert emulator.state.delta.expire(mailbox_id=room.id) >= 1
    emulator.book(room, WINDOW[0] + dt.timedelta(days=3, hours=10), 60)
    assert await _refresh(stored_source(), store, room.upn) == _truth_ids(emulator, room)
    # The refused link, then a full round (one more instance: at least as many pages).
    refused = emulator.requests(room) - full
    assert refused >= 1 + full
    # A full resync (missed notifications) ignores the stored link too.
    forgetful = stored_source()
    forgetful.forget(TENANT, room.upn)
    assert await _refresh(forgetful, store, room.upn) == _truth_ids(emulator, room)
    assert emulator.requests(room) - full - refused >= full


async def test_a_stored_link_of_another_window_is_not_continued(
    emulator: Emulated, store: SqlStore, stored_source: Callable[[], GraphSource]
) -> None:
    _fill(emulator)
    room = emulator.rooms[0]
    await _refresh(stored_source(), store, room.upn)
    calendar = await store.get_calendar(TENANT, room.upn)
    later = (WINDOW[0] + dt.timedelta(days=1), WINDOW[1] + dt.timedelta(days=1))
    before = emulator.requests(room)
    events = await stored_source().read_window(calendar, start=later[0], end=later[1])
    assert _seen(events) == emulator.truth(room, *later)
    assert emulator.requests(room) - before >= 2  # a full round in pages of 2, not one delta


async def test_a_worker_new_to_a_calendar_continues_from_the_link_stored_with_its_events(
    emulator: Emulated, store: SqlStore, stored_source: Callable[[], GraphSource]
) -> None:
    """Another worker wrote since this one's directory read the calendar row: the link in that
    row is older than the stored events. A booking made and cancelled between the two links is
    in the events, and a round from the older link never mentions it; the round must start
    from the link written with the events."""
    _fill(emulator)
    room = emulator.rooms[0]
    first = stored_source()
    await _refresh(first, store, room.upn)
    directory_row = await store.get_calendar(TENANT, room.upn)  # read, then kept a while
    booked = emulator.book(room, WINDOW[0] + dt.timedelta(days=4, hours=9), 30)
    assert booked in await _refresh(first, store, room.upn)
    emulator.state.calendars.delete_event(room.id, booked)
    other = stored_source()
    events = await other.read_window(directory_row, start=WINDOW[0], end=WINDOW[1])
    assert events is not None
    assert {event.id for event in events} == _truth_ids(emulator, room)
    assert booked not in {event.id for event in events}
