"""The delivery engine on its own: batching, ack deadlines, retries over a virtual 4 hours, the
slow and drop endpoint rules and notification faults, through an ``httpx.MockTransport``."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from graph_emulator.clock import Clock
from graph_emulator.counters import Counters
from graph_emulator.delivery import DeliveryEngine, DeliverySettings, Outgoing
from graph_emulator.faults import FaultRegistry

URL = "https://receiver.test/notify?tenant=t1"


@dataclass
class Receiver:
    """Answers each POST with ``status(n)`` after running ``before(n)`` (n counts from 0)."""

    clock: Clock
    status: Callable[[int], int] = lambda n: 202
    before: Callable[[int], Awaitable[None]] | None = None
    posts: list[tuple[float, list[dict[str, object]]]] = field(default_factory=list)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        n = len(self.posts)
        self.posts.append((self.clock.monotonic(), json.loads(request.content)["value"]))
        if self.before is not None:
            await self.before(n)
        return httpx.Response(self.status(n))

    @property
    def items(self) -> list[dict[str, object]]:
        return [item for _, batch in self.posts for item in batch]


@dataclass
class Rig:
    clock: Clock
    engine: DeliveryEngine
    receiver: Receiver
    counters: Counters
    faults: FaultRegistry
    dropped: list[str]


async def settle(rounds: int = 6) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0.01)


def item(n: int, sub: str = "sub-1") -> Outgoing:
    return Outgoing(body={"n": n, "subscriptionId": sub}, subscription_id=sub)


@pytest.fixture
async def rig() -> object:
    clock = Clock(virtual=True, start=dt.datetime(2026, 11, 23, 8, tzinfo=dt.UTC))
    receiver = Receiver(clock=clock)
    counters = Counters()
    faults = FaultRegistry(clock=clock)
    dropped: list[str] = []
    engine = DeliveryEngine(
        clock=clock,
        client=httpx.AsyncClient(transport=httpx.MockTransport(receiver.handle)),
        counters=counters,
        faults=faults,
        settings=DeliverySettings(batch_window_s=0.005),
        on_dropped=lambda ids: dropped.extend(sorted(ids)),
    )
    await engine.start()
    yield Rig(clock, engine, receiver, counters, faults, dropped)
    await engine.stop()
    await engine.client.aclose()


async def test_notifications_are_batched_into_one_post(rig: Rig) -> None:
    for n in range(5):
        rig.engine.submit(URL, item(n))
    await settle()
    assert len(rig.receiver.posts) == 1
    assert [i["n"] for i in rig.receiver.items] == [0, 1, 2, 3, 4]
    assert rig.counters.named["notifications_sent"] == 5


async def test_batches_are_capped(rig: Rig) -> None:
    rig.engine.settings.max_batch_size = 3
    for n in range(7):
        rig.engine.submit(URL, item(n))
    await settle()
    assert [len(batch) for _, batch in rig.receiver.posts] == [3, 3, 1]


async def test_failed_delivery_is_retried_with_growing_backoff_then_acked(rig: Rig) -> None:
    rig.receiver.status = lambda n: 503 if n < 3 else 202
    rig.engine.submit(URL, item(1))
    await settle()
    for _ in range(24):
        rig.clock.advance(dt.timedelta(seconds=5))
        await settle(2)
    times = [t for t, _ in rig.receiver.posts]
    assert len(times) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # 15 s, then doubling (observed to the 5-second steps the test moves the clock by).
    for gap, expected in zip(gaps, (15, 30, 60), strict=True):
        assert expected <= gap < expected + 5.5
    assert rig.counters.named["notifications_retried"] == 3
    assert rig.counters.named["notifications_sent"] == 1
    assert rig.dropped == []


async def test_retries_stop_after_four_hours_then_drop_and_report(rig: Rig) -> None:
    rig.receiver.status = lambda n: 500
    start = rig.clock.monotonic()
    rig.engine.submit(URL, item(1, "sub-9"))
    await settle()
    for _ in range(20):
        rig.clock.advance(dt.timedelta(minutes=30))
        await settle(3)
    last_attempt = rig.receiver.posts[-1][0]
    assert last_attempt - start <= 4 * 3600
    assert len(rig.receiver.posts) >= 8
    assert rig.counters.named["notifications_dropped"] == 1
    assert rig.dropped == ["sub-9"]
    assert rig.engine.queued() == 0


async def test_reply_after_the_deadline_counts_as_failure(rig: Rig) -> None:
    async def slow_first(n: int) -> None:
        if n == 0:
            rig.clock.advance(dt.timedelta(seconds=4))

    rig.receiver.before = slow_first
    rig.engine.submit(URL, item(1))
    await settle()
    rig.clock.advance(dt.timedelta(seconds=20))
    await settle()
    assert len(rig.receiver.posts) == 2
    assert rig.counters.named["notifications_retried"] == 1
    assert rig.counters.named["notifications_sent"] == 1


async def test_slow_endpoint_gets_new_notifications_ten_minutes_late(rig: Rig) -> None:
    async def two_in_ten_slow(n: int) -> None:
        if n in (3, 7):
            rig.clock.advance(dt.timedelta(seconds=4))

    rig.receiver.before = two_in_ten_slow
    rig.receiver.status = lambda n: 202
    for n in range(10):
        rig.engine.submit(URL, item(n))
        await settle(2)
    assert rig.engine.health_of(URL) == "slow"
    before = len(rig.receiver.posts)
    rig.engine.submit(URL, item(99))
    await settle()
    rig.clock.advance(dt.timedelta(minutes=9))
    await settle()
    assert not any(i["n"] == 99 for _, b in rig.receiver.posts[before:] for i in b)
    rig.clock.advance(dt.timedelta(minutes=2))
    await settle()
    assert any(i["n"] == 99 for i in rig.receiver.items)
    assert rig.engine.health_of(URL) == "normal"


async def test_drop_endpoint_discards_notifications_and_reports_missed(rig: Rig) -> None:
    async def two_in_ten_very_slow(n: int) -> None:
        if n in (2, 5):
            rig.clock.advance(dt.timedelta(seconds=11))

    rig.receiver.before = two_in_ten_very_slow
    for n in range(10):
        rig.engine.submit(URL, item(n, f"sub-{n}"))
        await settle(2)
    assert rig.engine.health_of(URL) == "drop"
    posts = len(rig.receiver.posts)
    rig.engine.submit(URL, item(50, "sub-x"))
    await settle()
    assert len(rig.receiver.posts) == posts
    assert "sub-x" in rig.dropped
    rig.clock.advance(dt.timedelta(minutes=11))
    rig.engine.submit(URL, item(51, "sub-y"))
    await settle()
    assert rig.engine.health_of(URL) == "normal"
    assert rig.receiver.items[-1]["n"] == 51


async def test_pause_holds_delivery_until_resume(rig: Rig) -> None:
    rig.engine.pause()
    rig.engine.submit(URL, item(1))
    await settle()
    assert rig.receiver.posts == []
    rig.engine.resume()
    await settle()
    assert [i["n"] for i in rig.receiver.items] == [1]


async def test_drop_fault_next_n(rig: Rig) -> None:
    rig.faults.set_notification_fault("drop", count=2)
    for n in range(4):
        rig.engine.submit(URL, item(n))
    await settle()
    assert [i["n"] for i in rig.receiver.items] == [2, 3]
    assert rig.counters.named["notifications_dropped"] == 2
    assert rig.dropped == ["sub-1", "sub-1"]
    assert "drop" not in rig.faults.notification


async def test_drop_fault_probability_is_seeded(rig: Rig) -> None:
    rig.faults.set_notification_fault("drop", probability=0.5)
    for n in range(40):
        rig.engine.submit(URL, item(n))
    await settle()
    delivered = {int(str(i["n"])) for i in rig.receiver.items}
    assert 5 < len(delivered) < 35
    assert rig.counters.named["notifications_dropped"] == 40 - len(delivered)


async def test_duplicate_fault(rig: Rig) -> None:
    rig.faults.set_notification_fault("duplicate", count=1)
    rig.engine.submit(URL, item(1))
    rig.engine.submit(URL, item(2))
    await settle()
    assert [i["n"] for i in rig.receiver.items] == [1, 1, 2]
    assert rig.counters.named["notifications_duplicated"] == 1


async def test_reorder_fault_delivers_held_item_after_the_next(rig: Rig) -> None:
    rig.faults.set_notification_fault("reorder", count=1)
    rig.engine.submit(URL, item(1))
    rig.engine.submit(URL, item(2))
    await settle()
    assert [i["n"] for i in rig.receiver.items] == [2, 1]
    assert len(rig.receiver.posts) == 2


async def test_reorder_fault_releases_a_lone_item_after_hold_time(rig: Rig) -> None:
    rig.faults.set_notification_fault("reorder", count=1)
    rig.engine.submit(URL, item(1))
    await settle()
    assert rig.receiver.posts == []
    rig.clock.advance(dt.timedelta(seconds=2))
    await settle()
    assert [i["n"] for i in rig.receiver.items] == [1]


async def test_delay_fault(rig: Rig) -> None:
    rig.faults.set_notification_fault("delay", count=1, delay_s=120)
    rig.engine.submit(URL, item(1))
    rig.engine.submit(URL, item(2))
    await settle()
    assert [i["n"] for i in rig.receiver.items] == [2]
    rig.clock.advance(dt.timedelta(seconds=121))
    await settle()
    assert [i["n"] for i in rig.receiver.items] == [2, 1]


async def test_silenced_subscription_sends_nothing_and_reports_nothing(rig: Rig) -> None:
    rig.faults.silence("sub-quiet")
    rig.engine.submit(URL, item(1, "sub-quiet"))
    rig.engine.submit(URL, item(2, "sub-loud"))
    await settle()
    assert [i["n"] for i in rig.receiver.items] == [2]
    assert rig.dropped == []
    assert rig.counters.named["notifications_silenced"] == 1


async def test_lifecycle_notifications_ignore_faults(rig: Rig) -> None:
    rig.faults.set_notification_fault("drop")
    rig.engine.submit(URL, item(1), lifecycle=True)
    await settle()
    assert [i["n"] for i in rig.receiver.items] == [1]
    assert rig.counters.named["lifecycle_sent"] == 1
