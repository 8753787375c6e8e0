"""Stopping a process always ends: a step of ``Container.close`` that fails or overruns is
logged, with what the process's tasks wait on, and the steps after it still run."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bookingcache import bootstrap
from bookingcache.bootstrap import open_service, stop_within
from bookingcache.clock import FixedClock
from bookingcache.settings import Settings


async def _wedged_on_a_lock(lock: asyncio.Event) -> None:
    await lock.wait()


async def test_a_step_that_never_ends_is_left_after_its_time_and_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    never = asyncio.Event()
    holder = asyncio.create_task(_wedged_on_a_lock(never), name="the holder")

    async def step() -> None:
        await _wedged_on_a_lock(never)

    caplog.set_level(logging.ERROR, logger=bootstrap.__name__)
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await stop_within("the wedged part", step, 0.2) is False
    assert loop.time() - began < 2
    [record] = caplog.records
    message = record.getMessage()
    assert "stopping the wedged part took longer than 0.2 s" in message
    # What the tasks wait on, down to the innermost await: the holder's and the step's own.
    assert "- the holder" in message
    assert message.count("in _wedged_on_a_lock") == 2
    never.set()
    await holder


async def test_a_step_that_fails_is_logged_and_a_step_that_ends_is_true(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fails() -> None:
        raise RuntimeError("the connection was reset")

    async def ends() -> None:
        await asyncio.sleep(0)

    caplog.set_level(logging.ERROR, logger=bootstrap.__name__)
    assert await stop_within("the failing part", fails, 1) is False
    assert await stop_within("the good part", ends, 1) is True
    [record] = caplog.records
    assert record.getMessage() == "stopping the failing part failed"
    assert record.exc_info is not None
    assert "the connection was reset" in str(record.exc_info[1])


async def test_the_steps_after_a_wedged_one_still_run(
    settings: Settings, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    container = await open_service(settings, clock=clock)
    never = asyncio.Event()
    stopped_probe = container.database_probe.stop
    ran: list[str] = []

    async def wedged_probe_stop() -> None:
        await stopped_probe()
        await _wedged_on_a_lock(never)

    detach = container.read_model.detach

    async def detach_read_model() -> None:
        ran.append("read model")
        await detach()

    container.database_probe.stop = wedged_probe_stop  # type: ignore[method-assign]
    container.read_model.detach = detach_read_model  # type: ignore[method-assign]
    caplog.set_level(logging.ERROR, logger=bootstrap.__name__)
    await container.close(step_s=0.3)
    assert ran == ["read model"]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert [message.split(";")[0] for message in errors] == [
        "stopping the database probe took longer than 0.3 s"
    ]
    never.set()
