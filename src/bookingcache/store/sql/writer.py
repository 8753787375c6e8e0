"""The SQLite store's writer thread: one thread that runs every write transaction of the
process, one after another, each handed over with one queue put and handed back with one
``call_soon_threadsafe``.

A ``ThreadPoolExecutor`` did this before. Its hand-over costs more: a ``concurrent.futures``
future with its condition, the executor's idle semaphore (a lock the writer thread takes after
every item and the event loop's thread takes on every submit, so the loop can block on the
writer thread while that thread waits for the interpreter lock) and a chained asyncio future.
Intake's group commit and the embedded worker hand over hundreds of transactions a second
(docs/benchmarks.md, "Intake").

The thread is a daemon: the store's ``close`` stops it after everything queued before has
run. A process that exits without closing its store abandons at most one transaction, which
SQLite rolls back; nobody can be waiting for its answer any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Item = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


class WriterThread:
    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # Calls handed over that have not ended and been handed back yet. Counted on the loop's
        # thread only (up in ``run``, down in ``_settle`` after the thread ran the call), so it
        # is never below what the thread still has to do, even for a call whose caller stopped
        # waiting.
        self._pending = 0

    @property
    def idle(self) -> bool:
        """Whether every call handed over has run and its result is back on the loop."""
        return self._pending == 0

    def run(self, call: Callable[[], T]) -> asyncio.Future[T]:
        """Queue ``call`` for the writer thread; a future of the running loop with its result
        (or its exception)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()
        self._pending += 1
        self._queue.put((loop, future, call))
        return future

    async def stop(self, last: Callable[[], None]) -> None:
        """Run ``last`` on the thread after everything queued before it, then end the thread."""
        await self.run(last)
        thread, self._thread = self._thread, None
        self._queue.put(None)
        if thread is not None:
            thread.join()

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            loop, future, call = item
            del item
            try:
                result = call()
            except BaseException as exc:  # noqa: BLE001 (handed to the waiting caller)
                self._hand_back(loop, future, None, exc)
            else:
                self._hand_back(loop, future, result, None)
            del loop, future, call

    def _hand_back(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        result: object,
        error: BaseException | None,
    ) -> None:
        # A closed loop has nobody left to tell.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._settle, future, result, error)

    def _settle(
        self, future: asyncio.Future[Any], result: object, error: BaseException | None
    ) -> None:
        self._pending -= 1
        if future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
