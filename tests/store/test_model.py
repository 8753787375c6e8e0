"""Property: any sequence of window replacements leaves the cache, the diffs and the change
feed exactly as a plain in-memory model of the contract says."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bookingcache.domain.events import BasicEvent, EventDiff, Sensitivity, ShowAs
from bookingcache.domain.tenancy import Room, Tenant, TenantSecrets
from bookingcache.store.sql.rows import overlaps
from bookingcache.store.sql.store import SqlStore, open_store
from tests.support.databases import sealing_box

T = TypeVar("T")
BASE = dt.datetime(2026, 3, 29, tzinfo=dt.UTC)  # a DST change in Europe, for good measure
# A coarse grid, so events and windows often share edges (where off-by-one bugs live).
SLOT = dt.timedelta(hours=2)
MAILBOX = "room@model.test"


class LoopThread:
    """An event loop in a thread, so a synchronous hypothesis test can drive the async store
    across many examples without reopening it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


@pytest.fixture
def model_store(database_url: str) -> Iterator[tuple[LoopThread, SqlStore]]:
    runner = LoopThread()
    store = runner.run(open_store(database_url, box=sealing_box(), migrate=False))
    try:
        yield runner, store
    finally:
        runner.run(store.close())
        runner.stop()


events_strategy = st.builds(
    lambda event_id, start, length, show_as, title, cancelled, all_day, sensitivity: BasicEvent(
        id=event_id,
        start=BASE + start * SLOT,
        end=BASE + (start + length) * SLOT,
        show_as=show_as,
        title=title,
        is_cancelled=cancelled,
        is_all_day=all_day,
        sensitivity=sensitivity,
    ),
    event_id=st.sampled_from([f"e{n}" for n in range(8)]),
    start=st.integers(0, 36),
    length=st.integers(0, 3),
    show_as=st.sampled_from(list(ShowAs)),
    title=st.sampled_from([None, "Planning", "1:1"]),
    cancelled=st.booleans(),
    all_day=st.booleans(),
    sensitivity=st.sampled_from(list(Sensitivity)),
)

step_strategy = st.tuples(
    st.integers(0, 36),  # window start, in slots
    st.integers(1, 12),  # window length, in slots
    st.lists(events_strategy, max_size=8, unique_by=lambda e: e.id),
)


class Model:
    def __init__(self) -> None:
        self.events: dict[str, BasicEvent] = {}

    def replace(self, start: dt.datetime, end: dt.datetime, given: list[BasicEvent]) -> EventDiff:
        in_window = {i for i, e in self.events.items() if overlaps(e, start, end)}
        kept = {e.id: e for e in given if overlaps(e, start, end)}
        added = tuple(e for i, e in kept.items() if i not in self.events)
        changed = tuple(e for i, e in kept.items() if i in self.events and self.events[i] != e)
        removed = tuple(sorted(in_window - kept.keys()))
        for event_id in removed:
            del self.events[event_id]
        self.events.update(kept)
        return EventDiff(added=added, changed=changed, removed=removed)


async def _new_calendar(store: SqlStore) -> str:
    tenant_id = f"model-{uuid.uuid4().hex[:12]}"
    await store.create_tenant(
        Tenant(id=tenant_id, name="Model", default_time_zone="Europe/Berlin"),
        TenantSecrets("whsec_bW9kZWw=", f"{tenant_id}.t"),
    )
    await store.put_room(Room(tenant_id, "room", MAILBOX, "Room"))
    return tenant_id


async def _everything(store: SqlStore, tenant_id: str) -> list[BasicEvent]:
    found = await store.events_in_window(
        tenant_id,
        [MAILBOX],
        start=BASE - dt.timedelta(days=7),
        end=BASE + dt.timedelta(days=14),
    )
    return found[MAILBOX]


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(step_strategy, min_size=1, max_size=6))
def test_replacements_match_the_model(
    model_store: tuple[LoopThread, SqlStore],
    steps: list[tuple[int, int, list[BasicEvent]]],
) -> None:
    runner, store = model_store
    tenant_id = runner.run(_new_calendar(store))
    model = Model()
    synced = False
    for start_slot, length, given_events in steps:
        start = BASE + start_slot * SLOT
        end = start + length * SLOT
        seq_before = runner.run(store.last_change_seq())
        diff = runner.run(
            store.replace_window(
                tenant_id,
                MAILBOX,
                window_start=start,
                window_end=end,
                events=given_events,
                synced_at=BASE,
            )
        )
        expected = model.replace(start, end, given_events)
        assert {e.id: e for e in diff.added} == {e.id: e for e in expected.added}
        assert {e.id: e for e in diff.changed} == {e.id: e for e in expected.changed}
        assert sorted(diff.removed) == list(expected.removed)

        stored = runner.run(_everything(store, tenant_id))
        assert sorted(stored, key=lambda e: e.id) == sorted(
            model.events.values(), key=lambda e: e.id
        )
        assert [e.start for e in stored] == sorted(e.start for e in stored)

        feed = runner.run(store.changes_since(seq_before))
        # The calendar's first sync is in the feed whatever it changed: its rooms turn known.
        assert len(feed) == (0 if expected.is_empty and synced else 1)
        synced = True
        assert all(c.tenant_id == tenant_id and c.mailbox == MAILBOX for c in feed)
