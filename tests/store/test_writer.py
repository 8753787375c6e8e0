"""The SQLite store's writer thread: every write transaction runs there, one after another; the
caller gets its result or its error back on its own loop; a transaction whose caller stops
waiting still runs to its end; closing the store lets what was queued run first."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bookingcache.domain.tenancy import Tenant
from bookingcache.errors import InvalidInput
from bookingcache.store.sql.engine import SQLITE_BUSY_TIMEOUT_MS
from bookingcache.store.sql.schema import tenants
from bookingcache.store.sql.store import SqlStore
from bookingcache.store.sql.writer import WriterThread

WAIT_S = 30.0


async def test_calls_run_in_order_on_one_thread_and_answer_on_the_callers_loop() -> None:
    writer = WriterThread("test-writer")
    ran: list[tuple[int, int]] = []

    def call(number: int) -> int:
        ran.append((number, threading.get_ident()))
        return number * 10

    results = await asyncio.gather(*(writer.run(lambda n=n: call(n)) for n in range(20)))
    await writer.stop(lambda: None)

    assert results == [n * 10 for n in range(20)]
    assert [number for number, _ in ran] == list(range(20))
    threads = {ident for _, ident in ran}
    assert len(threads) == 1
    assert threads != {threading.get_ident()}


async def test_an_error_reaches_its_caller_and_the_thread_goes_on() -> None:
    writer = WriterThread("test-writer")

    def fail() -> None:
        raise InvalidInput("no such thing")

    with pytest.raises(InvalidInput, match="no such thing"):
        await writer.run(fail)
    assert await writer.run(lambda: "still here") == "still here"
    await writer.stop(lambda: None)


async def test_stop_runs_what_was_queued_then_its_last_call() -> None:
    writer = WriterThread("test-writer")
    release = threading.Event()
    order: list[str] = []

    def blocked() -> None:
        assert release.wait(WAIT_S)
        order.append("queued")

    pending = writer.run(blocked)
    stopping = asyncio.create_task(writer.stop(lambda: order.append("last")))
    await asyncio.sleep(0)
    assert order == []
    release.set()
    await asyncio.wait_for(stopping, WAIT_S)
    await pending
    assert order == ["queued", "last"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_transaction_whose_caller_is_cancelled_commits_all_of_it(
    store: SqlStore, tenant: Tenant
) -> None:
    started = threading.Event()
    release = threading.Event()

    def work(connection: Connection) -> None:
        connection.execute(sa.update(tenants).where(tenants.c.id == tenant.id).values(name="One"))
        started.set()
        assert release.wait(WAIT_S)
        connection.execute(sa.update(tenants).where(tenants.c.id == tenant.id).values(name="Two"))

    caller = asyncio.create_task(store.transaction(work))
    assert await asyncio.to_thread(started.wait, WAIT_S)
    caller.cancel()
    await asyncio.sleep(0)
    # The caller is still waiting for the transaction's end, not gone half-way.
    assert not caller.done()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(caller, WAIT_S)
    assert (await store.get_tenant(tenant.id)).name == "Two"


def _rename(tenant_id: str, name: str, ran_on: list[int]) -> Callable[[Connection], None]:
    def work(connection: Connection) -> None:
        ran_on.append(threading.get_ident())
        connection.execute(sa.update(tenants).where(tenants.c.id == tenant_id).values(name=name))

    return work


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_brief_transaction_runs_on_the_loop_while_the_writer_thread_is_idle(
    store: SqlStore, tenant: Tenant
) -> None:
    ran_on: list[int] = []

    await store.transaction(_rename(tenant.id, "Brief", ran_on), brief=True)
    await store.transaction(_rename(tenant.id, "Handed over", ran_on))

    loop_thread = threading.get_ident()
    assert ran_on[0] == loop_thread
    assert ran_on[1] != loop_thread
    assert (await store.get_tenant(tenant.id)).name == "Handed over"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_brief_transaction_waits_its_turn_behind_the_writer_threads_work(
    store: SqlStore, tenant: Tenant
) -> None:
    started = threading.Event()
    release = threading.Event()
    ran_on: list[int] = []

    def slow(connection: Connection) -> None:
        ran_on.append(threading.get_ident())
        started.set()
        assert release.wait(WAIT_S)
        connection.execute(sa.update(tenants).where(tenants.c.id == tenant.id).values(name="Slow"))

    first = asyncio.create_task(store.transaction(slow))
    assert await asyncio.to_thread(started.wait, WAIT_S)
    second = asyncio.create_task(store.transaction(_rename(tenant.id, "Brief", ran_on), brief=True))
    await asyncio.sleep(0)
    assert not second.done()
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second), WAIT_S)

    # In order, on the writer thread: the brief one did not overtake or share the connection.
    assert ran_on[0] == ran_on[1] != threading.get_ident()
    assert (await store.get_tenant(tenant.id)).name == "Brief"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_brief_transaction_waits_on_the_writer_thread_for_another_process_lock(
    store: SqlStore, tenant: Tenant
) -> None:
    """Another process (here another connection) holds SQLite's write lock: the brief
    transaction does not wait for it on the loop, and does not fail either."""
    path = store.engine.url.database
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None)
    ran_on: list[int] = []
    try:
        other.execute("BEGIN IMMEDIATE")
        writing = asyncio.create_task(
            store.transaction(_rename(tenant.id, "After the lock", ran_on), brief=True)
        )
        # The loop goes on while the transaction waits for the lock on the writer thread.
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert not writing.done()
        other.execute("COMMIT")
        await asyncio.wait_for(writing, WAIT_S)
    finally:
        other.close()

    assert len(ran_on) == 1
    assert ran_on[0] != threading.get_ident()
    assert (await store.get_tenant(tenant.id)).name == "After the lock"
    # The writer connection waits for the lock again, as every transaction of the thread must.
    busy = await store.transaction(
        lambda connection: connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
    )
    assert busy == SQLITE_BUSY_TIMEOUT_MS


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_brief_transaction_that_fails_leaves_nothing_behind(
    store: SqlStore, tenant: Tenant
) -> None:
    def half(connection: Connection) -> None:
        connection.execute(sa.update(tenants).where(tenants.c.id == tenant.id).values(name="Half"))
        raise InvalidInput("refused half-way")

    with pytest.raises(InvalidInput, match="half-way"):
        await store.transaction(half, brief=True)

    assert (await store.get_tenant(tenant.id)).name == tenant.name
    ran_on: list[int] = []
    await store.transaction(_rename(tenant.id, "Next", ran_on), brief=True)
    assert ran_on == [threading.get_ident()]
    assert (await store.get_tenant(tenant.id)).name == "Next"
