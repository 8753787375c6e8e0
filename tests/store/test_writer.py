"""The SQLite store's writer thread: every write transaction runs there, one after another; the
caller gets its result or its error back on its own loop; a transaction whose caller stops
waiting still runs to its end; closing the store lets what was queued run first."""

from __future__ import annotations

import asyncio
import threading

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bookingcache.domain.tenancy import Tenant
from bookingcache.errors import InvalidInput
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
