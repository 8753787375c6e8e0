"""Group commit: concurrent requests share one inbox transaction.

A request hands its accepted notifications to ``submit`` and waits. While no commit runs, the
first submitter starts one; while one runs, later submitters queue up, and everything waiting
when it ends goes into the next single transaction. Each request is answered only after the
transaction holding its items committed, so "accepted" still means "durable", at the cost of
one commit per round instead of one per request.

When a shared commit fails, each request of the round is retried on its own, so one request
whose items cannot be stored (say, its tenant was deleted meanwhile) fails alone.
The commit runs in its own task: a request that goes away (its client hung up) does not cancel
a commit that holds other requests' items.

Before a round takes the waiting requests it lets the event loop go round ``GATHER_TURNS``
times. A request whose bytes have already arrived needs a turn or two to be parsed and
classified before it submits; with those turns it joins this round instead of starting the
next. Where a commit ends quickly (SQLite's brief rounds, which run on the loop's own thread),
rounds were otherwise taken as soon as the first request of a burst submitted, and each
carried about a third of the waiting requests (docs/benchmarks.md, "Intake"). A lone request
waits for the turns of an idle loop, a few microseconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from bookingcache.domain.notifications import InboxItem
from bookingcache.errors import NotPersisted

log = logging.getLogger(__name__)

Write = Callable[[Sequence[InboxItem]], Awaitable[object]]
# How many times the event loop goes round before a round takes the waiting requests.
GATHER_TURNS = 3
RoundObserver = Callable[[int, int], None]


class _Waiter:
    """One request's items and the future its answer waits on."""

    __slots__ = ("done", "items")

    def __init__(self, items: Sequence[InboxItem], done: asyncio.Future[None]) -> None:
        self.items = items
        self.done = done


class GroupCommitter:
    def __init__(
        self,
        write: Write,
        *,
        max_items: int = 5000,
        on_round: RoundObserver | None = None,
        gather_turns: int = GATHER_TURNS,
    ) -> None:
        """``write`` stores items in ONE transaction (``JobQueue.append_inbox``). A round takes
        waiting requests until it holds ``max_items`` items (a request is never split).
        ``on_round(requests, items)`` is told the size of every committed round."""
        self._write = write
        self._max_items = max_items
        self._on_round = on_round
        self._gather_turns = gather_turns
        self._waiting: list[_Waiter] = []
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0

    async def submit(self, items: Sequence[InboxItem]) -> None:
        """Return once ``items`` are committed; ``NotPersisted`` if they could not be."""
        if not items:
            return
        waiter = _Waiter(items, asyncio.get_running_loop().create_future())
        self._waiting.append(waiter)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="inbox group commit")
        # The future is this request's alone: a cancelled request cancels only it, and the
        # round that holds its items sees it done and leaves it be.
        await waiter.done

    async def drain(self) -> None:
        """Wait until everything submitted so far is committed or failed."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        batch: list[_Waiter] = []
        try:
            while self._waiting:
                for _ in range(self._gather_turns):
                    await asyncio.sleep(0)
                batch = self._take()
                await self._commit(batch)
                batch = []
        finally:
            # Only reached with work left when the commit task itself was cancelled (shutdown):
            # whether that transaction committed is unknown, so the senders must retry.
            interrupted = RuntimeError("the inbox commit was interrupted")
            for waiter in batch + self._waiting:
                _fail(waiter, interrupted)
            self._waiting.clear()

    def _take(self) -> list[_Waiter]:
        batch: list[_Waiter] = []
        count = 0
        while self._waiting:
            size = len(self._waiting[0].items)
            if batch and count + size > self._max_items:
                break
            batch.append(self._waiting.pop(0))
            count += size
        return batch

    async def _commit(self, batch: list[_Waiter]) -> None:
        items = [item for waiter in batch for item in waiter.items]
        try:
            await self._write(items)
        except Exception as exc:  # noqa: BLE001 (a failed round: retry its requests one by one)
            if len(batch) == 1:
                log.warning("inbox commit of %d notification(s) failed: %s", len(items), exc)
                _fail(batch[0], exc)
                return
            log.warning(
                "shared inbox commit of %d requests failed, retrying them one by one", len(batch)
            )
            for waiter in batch:
                await self._commit([waiter])
            return
        self.rounds += 1
        if self._on_round is not None:
            self._on_round(len(batch), len(items))
        for waiter in batch:
            if not waiter.done.done():
                waiter.done.set_result(None)


def _fail(waiter: _Waiter, exc: Exception) -> None:
    if not waiter.done.done():
        error = NotPersisted("the notifications could not be stored; send them again")
        error.__cause__ = exc
        waiter.done.set_exception(error)
