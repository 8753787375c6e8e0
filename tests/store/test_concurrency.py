"""Two refreshes of one calendar at once never interleave into a mixed result, also when
they come from two store instances (two processes' worth of connections) on one database."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
import sqlalchemy as sa

from bookingcache.domain.events import BasicEvent, EventDiff
from bookingcache.domain.tenancy import Tenant
from bookingcache.store.sql.store import SqlStore, open_store
from tests.support.databases import sealing_box
from tests.support.tenants import ACME as TENANT
from tests.support.waiting import until

A = "a@acme.test"
DAY = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
WRITERS = 6
EVENTS_PER_WRITER = 40


def batch(writer: int) -> list[BasicEvent]:
    return [
        BasicEvent(
            f"w{writer}-{i}",
            DAY + dt.timedelta(minutes=15 * i),
            DAY + dt.timedelta(minutes=15 * i + 10),
        )
        for i in range(EVENTS_PER_WRITER)
    ]


async def test_concurrent_replacements_serialise(
    store: SqlStore, tenant: Tenant, database_url: str
) -> None:
    second = await open_store(database_url, box=sealing_box(), migrate=False)
    try:
        stores = [store, second]
        inputs = {writer: batch(writer) for writer in range(WRITERS)}
        diffs: list[EventDiff] = await asyncio.gather(
            *(
                stores[writer % 2].replace_window(
                    TENANT,
                    A,
                    window_start=DAY,
                    window_end=DAY + dt.timedelta(days=1),
                    events=events,
                    synced_at=DAY,
                )
                for writer, events in inputs.items()
            )
        )
    finally:
        await second.close()

    ids = {writer: {e.id for e in events} for writer, events in inputs.items()}
    # Each replacement saw exactly the complete result of one other (or an empty calendar)...
    removed_sets = [set(diff.removed) for diff in diffs]
    assert sum(1 for removed in removed_sets if not removed) == 1
    predecessors = []
    for writer, diff in enumerate(diffs):
        assert {e.id for e in diff.added} == ids[writer]
        assert diff.changed == ()
        if diff.removed:
            (predecessor,) = [w for w, s in ids.items() if s == set(diff.removed)]
            predecessors.append(predecessor)
    # ... forming one chain: every writer but the last was replaced by exactly one other.
    assert len(set(predecessors)) == WRITERS - 1
    (last,) = set(range(WRITERS)) - set(predecessors)
    final = await store.events_in_window(TENANT, [A], start=DAY, end=DAY + dt.timedelta(days=1))
    assert final[A] == inputs[last]
    changes = await store.changes_since(0)
    assert len(changes) == WRITERS
    assert [c.seq for c in changes] == sorted(c.seq for c in changes)


async def test_a_session_stopped_inside_a_transaction_lets_go_of_its_locks(
    database_url: str,
) -> None:
    """A process stopped mid-transaction (SIGSTOP, a frozen host) would hold the rows it locked
    for as long as it is stopped; the server ends its session after the idle limit instead."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer, and no sessions to end")
    stopped = await open_store(database_url, box=sealing_box(), idle_transaction_s=0.5)
    waiting = await open_store(database_url, box=sealing_box())
    try:
        async with stopped.engine.connect() as frozen:
            await frozen.execute(sa.text("BEGIN"))
            await frozen.execute(
                sa.text("INSERT INTO duty_leases (duty, token) VALUES ('frozen', 0)")
            )
            # The frozen process does nothing more; another waits for the same row.
            began = time.monotonic()
            async with waiting.engine.begin() as other:
                await other.execute(
                    sa.text(
                        "INSERT INTO duty_leases (duty, token) VALUES ('frozen', 1) "
                        "ON CONFLICT (duty) DO NOTHING"
                    )
                )
            assert time.monotonic() - began < 10
            with pytest.raises(sa.exc.DBAPIError):
                await frozen.execute(sa.text("SELECT 1"))
        async with waiting.engine.connect() as connection:
            token = await connection.scalar(
                sa.text("SELECT token FROM duty_leases WHERE duty = 'frozen'")
            )
        assert token == 1  # the frozen insert was never committed
    finally:
        await stopped.close()
        await waiting.close()


async def test_the_pool_holds_the_connections_it_is_given(database_url: str) -> None:
    """``BOOKINGCACHE_DATABASE_POOL_SIZE`` reaches the engine: a process asked for a smaller
    pool holds no more than twice that many connections, however many transactions wait."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite's pool is its readers'; PostgreSQL counts connections")
    store = await open_store(database_url, box=sealing_box(), pool_size=2)
    try:
        held = 0
        most = 0
        release = asyncio.Event()

        async def hold() -> None:
            nonlocal held, most
            async with store.engine.connect() as connection:
                await connection.execute(sa.text("SELECT 1"))
                held += 1
                most = max(most, held)
                await release.wait()
                held -= 1

        tasks = [asyncio.create_task(hold()) for _ in range(6)]
        await until(lambda: most >= 4, what="four connections held")
        await asyncio.sleep(0.3)  # a fifth would have its connection by now
        assert most == 4  # 2, and 2 more under load; the other two wait for one
        release.set()
        await asyncio.gather(*tasks)
    finally:
        await store.close()
