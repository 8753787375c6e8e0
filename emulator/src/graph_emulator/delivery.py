"""Delivering notifications to webhook endpoints the way Graph does.

Notifications are queued per endpoint (URL) and sent in the background: a short batching window
gathers several into one ``{"value": [...]}`` POST. An endpoint acknowledges with a 2xx within
``ack_timeout_s`` (3 s) on the first attempt and ``retry_timeout_s`` (10 s) on retries; anything
else is retried with exponential backoff until ``retry_window_s`` (4 h) has passed since the first
attempt, and then dropped. Each endpoint's response times over a 10-minute window decide its
health: more than 10 % slower than 3 s marks it *slow* (new notifications wait 10 minutes), more
than 15 % slower than 10 s marks it *drop* (its notifications are discarded for 10 minutes).
Dropped change notifications are reported through ``on_dropped`` so a ``missed`` lifecycle event
can follow. Lifecycle notifications use their own endpoints and are never dropped by the health
rules or by injected faults.

Time comes from the injected clock (a virtual clock jumps hours in tests); HTTP goes through the
injected ``httpx.AsyncClient``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from graph_emulator.clock import Clock
from graph_emulator.counters import Counters
from graph_emulator.faults import FaultRegistry

log = logging.getLogger(__name__)

Health = Literal["normal", "slow", "drop"]


@dataclass
class DeliverySettings:
    ack_timeout_s: float = 3.0
    retry_timeout_s: float = 10.0
    retry_window_s: float = 4 * 3600.0
    retry_initial_s: float = 15.0
    retry_max_interval_s: float = 1800.0
    batch_window_s: float = 0.02
    max_batch_size: int = 50
    max_in_flight_per_endpoint: int = 8
    health_window_s: float = 600.0
    slow_fraction: float = 0.10
    drop_fraction: float = 0.15
    penalty_s: float = 600.0
    # Percentages over a handful of responses mean little; the rules wait for this many.
    health_min_samples: int = 10
    reorder_hold_s: float = 1.0

    def backoff_s(self, retry_number: int) -> float:
        """Delay before retry ``retry_number`` (1-based): doubling, capped."""
        delay_s = self.retry_initial_s * 2.0 ** (retry_number - 1)
        return min(delay_s, self.retry_max_interval_s)


@dataclass
class Outgoing:
    """One member of a notification POST's ``value`` array."""

    body: dict[str, Any]
    subscription_id: str


@dataclass
class Endpoint:
    url: str
    lifecycle: bool
    pending: list[tuple[float, int, Outgoing]] = field(default_factory=list)
    held: list[tuple[float, Outgoing]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    samples: deque[tuple[float, bool, bool]] = field(default_factory=deque)
    health: Health = "normal"
    health_until: float = 0.0
    in_flight: asyncio.Semaphore | None = None
    task: asyncio.Task[None] | None = None

    def current_health(self, now: float) -> Health:
        if self.health != "normal" and now >= self.health_until:
            self.health = "normal"
        return self.health


class DeliveryEngine:
    def __init__(
        self,
        *,
        clock: Clock,
        client: httpx.AsyncClient,
        counters: Counters,
        faults: FaultRegistry,
        settings: DeliverySettings | None = None,
        on_dropped: Callable[[Iterable[str]], None] | None = None,
    ) -> None:
        self.clock = clock
        self.client = client
        self.counters = counters
        self.faults = faults
        self.settings = settings or DeliverySettings()
        self.on_dropped = on_dropped
        self.endpoints: dict[tuple[str, bool], Endpoint] = {}
        self.paused = False
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._seq = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = False

    # -- lifecycle of the engine ----------------------------------------------------------------

    async def start(self) -> None:
        self._running = True
        for endpoint in self.endpoints.values():
            self._ensure_worker(endpoint)

    async def stop(self) -> None:
        self._running = False
        tasks = [t for t in self._tasks if not t.done()]
        tasks += [e.task for e in self.endpoints.values() if e.task and not e.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for endpoint in self.endpoints.values():
            endpoint.task = None
        self._tasks.clear()

    def pause(self) -> None:
        self.paused = True
        self._resumed.clear()

    def resume(self) -> None:
        self.paused = False
        self._resumed.set()
        for endpoint in self.endpoints.values():
            endpoint.wake.set()

    # -- intake -----------------------------------------------------------------------------------

    def submit(self, url: str, item: Outgoing, *, lifecycle: bool = False) -> None:
        """Queue one notification; never blocks and never raises for delivery problems."""
        endpoint = self._endpoint(url, lifecycle)
        now = self.clock.monotonic()
        ready_at = now
        if not lifecycle:
            sid = item.subscription_id
            if self.faults.is_silenced(sid):
                self.counters.incr("notifications_silenced")
                return
            if endpoint.current_health(now) == "drop":
                self._drop([item])
                return
            if self.faults.fires("drop", subscription_id=sid):
                self._drop([item])
                return
            if endpoint.current_health(now) == "slow":
                ready_at = now + self.settings.penalty_s
                self.counters.incr("notifications_delayed_slow_endpoint")
            delay = self.faults.fires("delay", subscription_id=sid)
            if delay is not None:
                ready_at += delay.delay_s
                self.counters.incr("notifications_delayed")
            if self.faults.fires("reorder", subscription_id=sid):
                endpoint.held.append((now + self.settings.reorder_hold_s, item))
                self.counters.incr("notifications_reordered")
                self._kick(endpoint)
                return
            if self.faults.fires("duplicate", subscription_id=sid):
                heapq.heappush(endpoint.pending, (ready_at, next(self._seq), item))
                self.counters.incr("notifications_duplicated")
        heapq.heappush(endpoint.pending, (ready_at, next(self._seq), item))
        self._kick(endpoint)

    def queued(self) -> int:
        return sum(len(e.pending) + len(e.held) for e in self.endpoints.values())

    def health_of(self, url: str) -> Health:
        endpoint = self.endpoints.get((url, False))
        return "normal" if endpoint is None else endpoint.current_health(self.clock.monotonic())

    def describe_endpoints(self) -> list[dict[str, Any]]:
        now = self.clock.monotonic()
        return [
            {
                "url": e.url,
                "lifecycle": e.lifecycle,
                "health": e.current_health(now),
                "queued": len(e.pending) + len(e.held),
            }
            for e in self.endpoints.values()
        ]

    # -- internals --------------------------------------------------------------------------------

    def _endpoint(self, url: str, lifecycle: bool) -> Endpoint:
        key = (url, lifecycle)
        endpoint = self.endpoints.get(key)
        if endpoint is None:
            endpoint = Endpoint(url=url, lifecycle=lifecycle)
            self.endpoints[key] = endpoint
        return endpoint

    def _kick(self, endpoint: Endpoint) -> None:
        endpoint.wake.set()
        self._ensure_worker(endpoint)

    def _ensure_worker(self, endpoint: Endpoint) -> None:
        if not self._running or (endpoint.task is not None and not endpoint.task.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # queued; start() launches the worker
        endpoint.in_flight = asyncio.Semaphore(self.settings.max_in_flight_per_endpoint)
        endpoint.task = loop.create_task(self._worker(endpoint))

    def _drop(self, items: list[Outgoing]) -> None:
        self.counters.incr("notifications_dropped", len(items))
        if self.on_dropped is not None:
            self.on_dropped({i.subscription_id for i in items})

    async def _worker(self, endpoint: Endpoint) -> None:
        while True:
            await self._wait_until_ready(endpoint)
            # Gather for a moment unless a full batch is already waiting.
            if self.settings.batch_window_s > 0 and not self._full_batch_ready(endpoint):
                await self.clock.sleep(self.settings.batch_window_s)
            # Everything ready goes out now, in as many POSTs as the batch size needs.
            while batch := self._take_batch(endpoint):
                assert endpoint.in_flight is not None
                await endpoint.in_flight.acquire()
                task = asyncio.get_running_loop().create_task(self._deliver(endpoint, batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _wait_until_ready(self, endpoint: Endpoint) -> None:
        while True:
            if self.paused:
                await self._resumed.wait()
                continue
            now = self.clock.monotonic()
            self._release_held(endpoint, now, force=False)
            deadlines = [d for d, _ in endpoint.held]
            if endpoint.pending:
                if endpoint.pending[0][0] <= now:
                    return
                deadlines.append(endpoint.pending[0][0])
            endpoint.wake.clear()
            if not deadlines:
                await endpoint.wake.wait()
                continue
            sleeper = asyncio.ensure_future(self.clock.sleep(min(deadlines) - now))
            waker = asyncio.ensure_future(endpoint.wake.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()

    def _release_held(self, endpoint: Endpoint, now: float, *, force: bool) -> None:
        keep: list[tuple[float, Outgoing]] = []
        for deadline, item in endpoint.held:
            if force or deadline <= now:
                heapq.heappush(endpoint.pending, (now, next(self._seq), item))
            else:
                keep.append((deadline, item))
        endpoint.held = keep

    def _full_batch_ready(self, endpoint: Endpoint) -> bool:
        size = self.settings.max_batch_size
        if len(endpoint.pending) < size:
            return False
        now = self.clock.monotonic()
        return sum(1 for ready_at, *_ in endpoint.pending[:size] if ready_at <= now) >= size

    def _take_batch(self, endpoint: Endpoint) -> list[Outgoing]:
        now = self.clock.monotonic()
        batch: list[Outgoing] = []
        while (
            endpoint.pending
            and endpoint.pending[0][0] <= now
            and len(batch) < self.settings.max_batch_size
        ):
            batch.append(heapq.heappop(endpoint.pending)[2])
        return batch

    async def _deliver(self, endpoint: Endpoint, batch: list[Outgoing]) -> None:
        assert endpoint.in_flight is not None
        released = False
        try:
            first_attempt = self.clock.monotonic()
            attempt = 0
            while True:
                await self._resumed.wait()
                if not endpoint.lifecycle and (
                    endpoint.current_health(self.clock.monotonic()) == "drop"
                ):
                    self._drop(batch)
                    return
                s = self.settings
                limit_s = s.ack_timeout_s if attempt == 0 else s.retry_timeout_s
                acked = await self._post(endpoint, batch, limit_s=limit_s, retry=attempt > 0)
                if attempt == 0:
                    # Items the reorder fault held back go out after the batch that overtook them.
                    self._release_held(endpoint, self.clock.monotonic(), force=True)
                    endpoint.wake.set()
                    endpoint.in_flight.release()
                    released = True
                if acked:
                    name = "lifecycle_sent" if endpoint.lifecycle else "notifications_sent"
                    self.counters.incr(name, len(batch))
                    return
                attempt += 1
                delay = self.settings.backoff_s(attempt)
                elapsed = self.clock.monotonic() - first_attempt
                if elapsed + delay > self.settings.retry_window_s:
                    if endpoint.lifecycle:
                        self.counters.incr("lifecycle_dropped", len(batch))
                    else:
                        self._drop(batch)
                    return
                name = "lifecycle_retried" if endpoint.lifecycle else "notifications_retried"
                self.counters.incr(name, len(batch))
                await self.clock.sleep(delay)
        finally:
            if not released:
                endpoint.in_flight.release()

    async def _post(
        self, endpoint: Endpoint, batch: list[Outgoing], *, limit_s: float, retry: bool
    ) -> bool:
        payload = json.dumps({"value": [i.body for i in batch]}).encode()
        started = self.clock.monotonic()
        timed_out = False
        status = 0
        try:
            response = await self.client.post(
                endpoint.url,
                content=payload,
                headers={"Content-Type": "application/json; charset=utf-8"},
                timeout=limit_s,
            )
            status = response.status_code
        except httpx.TimeoutException:
            timed_out = True
        except httpx.HTTPError as exc:
            log.info("notification POST to %s failed: %s", endpoint.url, exc)
        self.counters.incr("notification_posts")
        elapsed = self.clock.monotonic() - started
        # A reply that came after the deadline counts as a timeout, as it would at Graph.
        late = timed_out or elapsed > limit_s
        if not endpoint.lifecycle:
            self._record(endpoint, elapsed=elapsed, late=late, retry=retry)
        return 200 <= status < 300 and not late

    def _record(self, endpoint: Endpoint, *, elapsed: float, late: bool, retry: bool) -> None:
        s = self.settings
        now = self.clock.monotonic()
        slow = elapsed > s.ack_timeout_s or late
        very_slow = elapsed > s.retry_timeout_s or (late and retry)
        endpoint.samples.append((now, slow, very_slow))
        while endpoint.samples and endpoint.samples[0][0] < now - s.health_window_s:
            endpoint.samples.popleft()
        total = len(endpoint.samples)
        if total < s.health_min_samples or endpoint.current_health(now) != "normal":
            return
        very_slow_share = sum(1 for *_, v in endpoint.samples if v) / total
        slow_share = sum(1 for _, sl, _ in endpoint.samples if sl) / total
        if very_slow_share > s.drop_fraction:
            endpoint.health = "drop"
        elif slow_share > s.slow_fraction:
            endpoint.health = "slow"
        else:
            return
        endpoint.health_until = now + s.penalty_s
        endpoint.samples.clear()
        self.counters.incr(f"endpoints_marked_{endpoint.health}")
        log.info("endpoint %s marked %s", endpoint.url, endpoint.health)
