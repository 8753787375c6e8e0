"""Wake-ups between processes on PostgreSQL (``LISTEN``/``NOTIFY``).

A transaction that appends to the change feed also sends a notice on its channel (``notify``);
PostgreSQL delivers it when, and only if, the transaction commits. Intake's commits, which
follow one another as fast as the database allows, announce their jobs right after they
commit instead (``Announcer``), so the notice costs their transaction no round trip.
Every process that runs a worker, or answers availability, listens on one connection of its
own (``Notices``), so a worker learns of another process's intake at once, and an API process
of another process's refresh, instead of at its next poll.

Notices are only a wake-up: the polls stay, as the safety net, and nothing is lost while the
listening connection is down. It is reconnected with backoff; each (re)connection calls the
subscribers' ``on_connect``, since notices sent meanwhile were not delivered.

A notice's payload is ``<origin> <detail>``: ``origin`` names the sending process, which
ignores its own notices (it woke its own listeners in-process already).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

JOBS_CHANNEL = "bookingcache_jobs"
CHANGES_CHANNEL = "bookingcache_changes"
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


class _Origin:
    """This process's name in its notices: random, and new in a forked child."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.value = os.urandom(6).hex()


_origin = _Origin()


def origin() -> str:
    return _origin.value


def notify(connection: Connection, channel: str, detail: str = "") -> None:
    """Send a notice on ``channel`` when ``connection``'s transaction commits (PostgreSQL;
    nothing on other databases)."""
    if connection.dialect.name == "postgresql":
        connection.execute(_NOTIFY, {"channel": channel, "payload": f"{origin()} {detail}"})


class Announcer:
    """Notices sent after the commit, off the committing path: ``announce`` returns at once;
    one task sends them on a connection of its own, at most one per channel every ``gap_s``, and
    what is announced meanwhile is folded into the next (the earliest due time of a channel
    wins: ``detail`` is an ISO instant, or empty for "now"). The gap keeps a busy intake from
    spending a statement per commit; it is well inside the sync's gather delay, so it delays
    no refresh. A notice that cannot be sent is dropped (the listeners' polls find the work
    anyway), and the next is sent no sooner than ``retry_s`` later, so a database that is down
    is not asked to connect at every commit attempt."""

    def __init__(self, dsn: str, *, gap_s: float = 0.005, retry_s: float = 1.0) -> None:
        self._dsn = dsn
        self._gap_s = gap_s
        self._retry_s = retry_s
        self._connection: Any = None
        self._waiting: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    def announce(self, channel: str, detail: str = "") -> None:
        known = self._waiting.get(channel)
        if known is None or not detail or (known and detail < known):
            self._waiting[channel] = detail
        if self._task is None:
            self._task = asyncio.create_task(self._send(), name="store announcements")

    async def _send(self) -> None:
        try:
            while self._waiting:
                waiting, self._waiting = self._waiting, {}
                try:
                    if self._connection is None or self._connection.is_closed():
                        self._connection = await asyncpg.connect(
                            self._dsn,
                            timeout=5,
                            server_settings={"application_name": "bookingcache announcer"},
                        )
                    for channel, detail in waiting.items():
                        await self._connection.execute(
                            "SELECT pg_notify($1, $2)", channel, f"{origin()} {detail}", timeout=5
                        )
                except Exception as exc:  # noqa: BLE001 (the polls are the safety net)
                    log.debug("store notices: could not announce %s: %s", list(waiting), exc)
                    await self._disconnect()
                    await asyncio.sleep(self._retry_s)
                await asyncio.sleep(self._gap_s)
        finally:
            self._task = None

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(connection.close(timeout=2))

    async def close(self) -> None:
        task, self._task = self._task, None
        self._waiting.clear()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._disconnect()


@dataclass(slots=True)
class _Subscription:
    channel: str
    on_notice: Callable[[str], None]
    on_connect: Callable[[], None] | None


class Notices:
    """One listening connection, kept open: ``subscribe`` then ``start``; ``close`` at the end.
    ``on_notice(detail)`` is called for every notice of another process on the channel."""

    def __init__(
        self,
        dsn: str,
        *,
        check_s: float = 5.0,
        retry_s: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self._dsn = dsn
        # Notices this process sent are not for it (its listeners heard of them in-process).
        self._origin = origin()
        self._check_s = check_s
        self._retry_s = retry_s
        self._subscriptions: list[_Subscription] = []
        self._connection: Any = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self.connected = asyncio.Event()
        # Since start: notices of other processes handed to subscribers, and connections made.
        self.received = 0
        self.connections = 0

    def subscribe(
        self,
        channel: str,
        on_notice: Callable[[str], None],
        *,
        on_connect: Callable[[], None] | None = None,
    ) -> None:
        subscription = _Subscription(channel, on_notice, on_connect)
        self._subscriptions.append(subscription)
        if self._connection is not None and not self._connection.is_closed():
            # Listening already: add the channel on the open connection.
            task = asyncio.create_task(self._listen(self._connection, [subscription]))
            task.add_done_callback(self._listened)

    def unsubscribe(self, channel: str, on_notice: Callable[[str], None]) -> None:
        self._subscriptions = [
            s for s in self._subscriptions if (s.channel, s.on_notice) != (channel, on_notice)
        ]

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="store notices")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        delay = self._retry_s[0]
        while True:
            connection = None
            try:
                connection = await asyncpg.connect(
                    self._dsn,
                    timeout=5,
                    server_settings={"application_name": "bookingcache notices"},
                )
                self._lost.clear()
                connection.add_termination_listener(lambda _connection: self._lost.set())
                await self._listen(connection, self._subscriptions)
                self._connection = connection
                self.connections += 1
                self.connected.set()
                delay = self._retry_s[0]
                self._caught_up()
                while True:
                    # A connection dropped without a word (a host gone) is found by using it.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._lost.wait(), self._check_s)
                    if self._lost.is_set():
                        raise ConnectionError("the listening connection was closed")
                    await connection.fetchval("SELECT 1", timeout=self._check_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (any failure: listen again after a pause)
                log.warning("store notices: not listening (%s); polling meanwhile", exc)
            finally:
                self.connected.clear()
                self._connection = None
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(connection.close(timeout=2))
            await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 (jitter)
            delay = min(delay * 2, self._retry_s[1])

    async def _listen(self, connection: Any, subscriptions: list[_Subscription]) -> None:
        for subscription in list(subscriptions):
            await connection.add_listener(subscription.channel, self._dispatcher(subscription))

    def _listened(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # The connection is broken: the next check finds it and listens to all again.
            log.warning("store notices: could not listen: %s", task.exception())
            self._lost.set()

    def _dispatcher(self, subscription: _Subscription) -> Callable[..., None]:
        def dispatch(_connection: Any, _pid: int, _channel: str, payload: str) -> None:
            sender, _, detail = payload.partition(" ")
            if sender == self._origin or subscription not in self._subscriptions:
                return
            self.received += 1
            try:
                subscription.on_notice(detail)
            except Exception:  # a subscriber's failure must not stop the listening
                log.exception("store notices: %s subscriber failed", subscription.channel)

        return dispatch

    def _caught_up(self) -> None:
        for subscription in self._subscriptions:
            if subscription.on_connect is not None:
                try:
                    subscription.on_connect()
                except Exception:
                    log.exception("store notices: %s subscriber failed", subscription.channel)


class NoticesCollector(Collector):
    """The listening connection of ``source()`` (a store's ``notices``, None until something
    listens) as Prometheus metrics, read when they are scraped."""

    def __init__(self, source: Callable[[], Notices | None]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        notices = self._source()
        yield GaugeMetricFamily(
            "bookingcache_store_notices_listening",
            "1 while this process listens for other processes' notices (PostgreSQL), else 0: "
            "then it learns of their work only by polling",
            value=1 if notices is not None and notices.connected.is_set() else 0,
        )
        yield CounterMetricFamily(
            "bookingcache_store_notices_received",
            "Notices of other processes received (PostgreSQL)",
            value=notices.received if notices is not None else 0,
        )
        yield CounterMetricFamily(
            "bookingcache_store_notices_connections",
            "Listening connections made (PostgreSQL); more than one means it was lost",
            value=notices.connections if notices is not None else 0,
        )
