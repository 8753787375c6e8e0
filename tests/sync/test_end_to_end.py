"""End to end: Graph emulator → notifications → queue → worker (graph source over MSAL) →
store → availability API. Notifications are handed to the inbox the way intake does
(``Inbox.append``), built from the changes Exchange reported in the emulator."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from bookingcache.bootstrap import Container, Transports, service_app
from bookingcache.domain.notifications import InboxItem, NotificationKind
from bookingcache.settings import Settings, SyncSettings
from bookingcache.sync.runtime import SyncRuntime
from tests.support.auth import ADMIN, ADMIN_TOKEN
from tests.support.databases import SECRETS_KEY
from tests.support.waiting import until

from .emulated import TENANT, Emulated, emulate

START = dt.datetime(2026, 3, 16, 6, 0, tzinfo=dt.UTC)
DAY = dt.datetime(2026, 3, 17, tzinfo=dt.UTC)


class Service:
    def __init__(self, app: FastAPI, emulator: Emulated) -> None:
        self.app = app
        self.emulator = emulator
        self._stack = contextlib.AsyncExitStack()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://service.test"
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Service]:
        async with self._stack:
            await self._stack.enter_async_context(self.app.router.lifespan_context(self.app))
            await self._stack.enter_async_context(self.client)
            yield self

    async def stop(self) -> None:
        await self._stack.aclose()

    async def link_rooms(self) -> None:
        """The tenant and its rooms, unless an earlier start made them."""
        created = await self.client.post(
            "/v1/tenants",
            json={
                "id": TENANT,
                "name": "Contoso",
                "event_source": "graph",
                "default_time_zone": "Europe/Berlin",
                "graph": {"directory_tenant": self.emulator.state.tenant_id},
            },
            headers=ADMIN,
        )
        if created.status_code == 409:
            return
        assert created.status_code == 201, created.text
        for index, room in enumerate(self.emulator.rooms):
            linked = await self.client.put(
                f"/v1/tenants/{TENANT}/rooms/r{index}",
                json={"mailbox": room.upn, "name": room.display_name, "building": "HQ"},
                headers=ADMIN,
            )
            assert linked.status_code in (200, 201), linked.text

    @property
    def container(self) -> Container:
        container = self.app.state.services
        assert isinstance(container, Container)
        return container

    @property
    def runtime(self) -> SyncRuntime:
        return self.container.sync

    def notifications(
        self, *, drop: float = 0.0, duplicate: bool = False, rng: random.Random | None = None
    ) -> list[InboxItem]:
        rng = rng or random.Random(3)
        items = []
        for mailbox_id, _event_id, change in self.emulator.changes.take():
            mailbox = self.emulator.state.directory.resolve(mailbox_id)
            if rng.random() < drop:
                continue
            item = InboxItem(TENANT, mailbox.upn, change_type=change)
            items.extend([item, item] if duplicate else [item])
        return items

    async def notify(self, items: list[InboxItem], *, batch: int = 3) -> None:
        for offset in range(0, len(items), batch):
            await self.container.inbox.append(items[offset : offset + batch])

    async def settled(self, timeout_s: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while await self.runtime.queue.busy_calendars():
            if loop.time() > deadline:
                raise AssertionError("the queue did not drain")
            await asyncio.sleep(0.02)

    async def events(self, room: str) -> list[dict[str, Any]]:
        response = await self.client.get(
            f"/v1/tenants/{TENANT}/rooms/{room}/events",
            params={"start": "2026-03-16T00:00:00Z", "end": "2026-03-30T00:00:00Z"},
            headers=ADMIN,
        )
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        return events

    async def busy(self, room: str, day: dt.datetime = DAY) -> list[tuple[str, str]]:
        response = await self.client.get(
            f"/v1/tenants/{TENANT}/rooms/{room}/availability",
            params={
                "start": day.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "end": (day + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            headers=ADMIN,
        )
        assert response.status_code == 200, response.text
        return [(span["start"], span["end"]) for span in response.json()["busy"]]

    async def converged(self, room_index: int) -> bool:
        emulator = self.emulator
        room = emulator.rooms[room_index]
        truth = emulator.truth(
            room, dt.datetime(2026, 3, 16, tzinfo=dt.UTC), dt.datetime(2026, 3, 30, tzinfo=dt.UTC)
        )
        cached = await self.events(f"r{room_index}")
        seen = {
            (
                event["id"],
                dt.datetime.fromisoformat(event["start"]),
                dt.datetime.fromisoformat(event["end"]),
                event["is_cancelled"],
            )
            for event in cached
        }
        return seen == truth


StartService = Callable[..., Awaitable[Service]]


@pytest.fixture
def emulator() -> Emulated:
    return emulate(rooms=4, start=START)


@pytest.fixture
async def start_service(
    tmp_path: Path, database_url: str, emulator: Emulated
) -> AsyncIterator[StartService]:
    """Starts the service with the sync engine's ``knobs`` on the emulator's clock, its tenant
    reading four rooms from the emulator (its ``graph`` source). A service started again runs
    on the same database; stop the first with ``Service.stop`` to restart."""
    async with contextlib.AsyncExitStack() as running:

        async def start(**knobs: Any) -> Service:
            sync = SyncSettings.model_validate(
                {
                    "coalesce_ms": 100,
                    "poll_interval_ms": 50,
                    "backoff_base_s": 0.05,
                    "backoff_max_s": 0.5,
                    "graph": emulator.settings(),
                }
                | knobs
            )
            settings = Settings(
                data_dir=tmp_path / "data",
                database_url=database_url,
                admin_token=SecretStr(ADMIN_TOKEN),
                secrets_key=SecretStr(SECRETS_KEY),
                database_wait_s=0,
                run_worker=True,
                sync=sync,
            )
            app = service_app(
                settings,
                clock=emulator.state.clock,
                transports=Transports(graph=emulator.transport),
            )
            service = Service(app, emulator)
            await running.enter_async_context(service.running())
            await service.link_rooms()
            return service

        yield start


def _utc(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_created_moved_cancelled_and_occurrence_edit_reach_the_availability_api(
    start_service: StartService,
) -> None:
    # The burst arrives in two inbox commits; a gather delay of 300 ms (as in the duplicates
    # test) keeps a stall of the machine between them from splitting it into two refreshes.
    service = await start_service(coalesce_ms=300)
    runtime = service.runtime
    emulator = service.emulator
    room = emulator.rooms[0]
    # The rooms' first reads (their links, and the sweep's start-up pass) are done before the
    # booking, so that what is counted below is the booking's own refresh.
    await service.settled()
    first_reads = runtime.worker.stats.by_calendar[(TENANT, room.upn)]
    booking = emulator.book(room, DAY + dt.timedelta(hours=9), 60)
    await service.notify(service.notifications())
    await service.settled()
    assert await service.busy("r0") == [
        (_utc(DAY + dt.timedelta(hours=9)), _utc(DAY + dt.timedelta(hours=10)))
    ]
    # One booking = 1 created + 3 updated notifications = one refresh.
    assert runtime.worker.stats.by_calendar[(TENANT, room.upn)] == first_reads + 1

    emulator.move(room, booking, DAY + dt.timedelta(hours=13), 30)
    await service.notify(service.notifications())
    await service.settled()
    assert await service.busy("r0") == [
        (_utc(DAY + dt.timedelta(hours=13)), _utc(DAY + dt.timedelta(hours=13, minutes=30)))
    ]

    emulator.state.calendars.cancel_event(room.id, booking)
    await service.notify(service.notifications())
    await service.settled()
    assert await service.busy("r0") == []
    [cancelled] = await service.events("r0")
    assert cancelled["is_cancelled"] is True

    series = emulator.book(
        room,
        DAY + dt.timedelta(hours=8),
        30,
        recurrence={
            "pattern": {"type": "daily", "interval": 1},
            "range": {
                "type": "numbered",
                "startDate": DAY.date().isoformat(),
                "numberOfOccurrences": 3,
            },
        },
    )
    await service.notify(service.notifications())
    await service.settled()
    assert len(await service.busy("r0", DAY + dt.timedelta(days=1))) == 1
    # Moving one occurrence is reported on the series master; the window re-read finds it.
    emulator.state.calendars.update_occurrence(
        room.id,
        series,
        DAY + dt.timedelta(days=1, hours=8),
        {
            "start": {"dateTime": "2026-03-18T15:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-03-18T16:00:00", "timeZone": "UTC"},
        },
    )
    reported = service.notifications()
    assert reported
    assert all(item.mailbox == room.upn for item in reported)
    await service.notify(reported)
    await service.settled()
    assert await service.busy("r0", DAY + dt.timedelta(days=1)) == [
        ("2026-03-18T15:00:00Z", "2026-03-18T16:00:00Z")
    ]
    assert await service.converged(0)


async def test_duplicated_reordered_delayed_notifications_converge_with_one_refresh_per_burst(
    start_service: StartService,
) -> None:
    service = await start_service(coalesce_ms=300)
    runtime = service.runtime
    emulator = service.emulator
    for index, room in enumerate(emulator.rooms):
        emulator.book(room, DAY + dt.timedelta(hours=9 + index), 45)
    items = service.notifications(duplicate=True)
    random.Random(5).shuffle(items)
    # Intake group-commits concurrent requests: the reordered, duplicated burst of all four
    # rooms arrives in a few batches inside the coalescing window.
    await service.notify(items, batch=8)
    await service.settled()
    assert all([await service.converged(index) for index in range(4)])
    counts = [runtime.worker.stats.by_calendar[(TENANT, room.upn)] for room in emulator.rooms]
    assert counts == [1, 1, 1, 1]
    # A late duplicate of an old notification costs one refresh and changes nothing.
    changed_before = runtime.worker.stats.changed
    await service.notify(items[:1])
    await service.settled()
    assert all([await service.converged(index) for index in range(4)])
    assert sum(runtime.worker.stats.by_calendar.values()) == 5
    assert runtime.worker.stats.changed == changed_before


async def test_sweep_converges_calendars_whose_notifications_were_dropped(
    start_service: StartService,
) -> None:
    service = await start_service()
    runtime = service.runtime
    emulator = service.emulator
    rng = random.Random(11)
    for round_ in range(5):
        for room in emulator.rooms:
            emulator.book(
                room, DAY + dt.timedelta(hours=8 + 2 * round_, minutes=rng.randrange(0, 60, 15)), 30
            )
    # Exchange reports each booking as a burst; deliver them with 20 % lost.
    await service.notify(service.notifications(drop=0.2, rng=rng))
    await service.settled()
    # Some calendars miss changes whose whole burst was lost...
    for room in emulator.rooms:
        emulator.book(room, DAY + dt.timedelta(days=2, hours=10), 30)
    service.emulator.changes.take()  # ...and these are never notified at all.
    assert not all([await service.converged(index) for index in range(4)])
    runtime.sweep.bound_s = 0.2
    runtime.sweep.rate_per_s = 20
    await asyncio.sleep(0.3)
    scheduled = await runtime.sweep.run_once()
    assert scheduled == 4
    await service.settled()
    assert all([await service.converged(index) for index in range(4)])


async def test_throttling_storm_and_missed_lifecycle_converge_within_graph_limits(
    start_service: StartService,
) -> None:
    service = await start_service()
    runtime = service.runtime
    emulator = service.emulator
    emulator.faults.set_mailbox_fault("*", "throttle", probability=0.5, retry_after_s=1)
    for index, room in enumerate(emulator.rooms):
        emulator.book(room, DAY + dt.timedelta(hours=10 + index), 60)
    await service.notify(service.notifications())
    # The storm lasts until Graph has refused some of the refreshes, however slowly a loaded
    # machine gets to them: a fixed time could end it before the worker's first request.
    await until(
        lambda: emulator.state.counters.throttled >= 2,
        timeout_s=15,
        what="Graph throttled the refreshes",
    )
    emulator.faults.clear_mailbox_fault()
    # A lifecycle "missed" forces a full round on top.
    await service.notify([InboxItem(TENANT, emulator.rooms[0].upn, NotificationKind.MISSED)])
    await service.settled(timeout_s=15)
    assert all([await service.converged(index) for index in range(4)])
    counters = emulator.state.counters
    assert max(counters.max_concurrency_per_mailbox.values()) <= 4
    assert runtime.worker.stats.throttled > 0


async def test_a_restarted_worker_continues_from_the_stored_delta_link(
    start_service: StartService, emulator: Emulated
) -> None:
    room = emulator.rooms[0]
    page_of_one = {"graph": emulator.settings(page_size=1)}  # a full read: a request per event
    service = await start_service(**page_of_one)
    booking = emulator.book(room, DAY + dt.timedelta(hours=9), 60)
    emulator.book(room, DAY + dt.timedelta(hours=11), 30)
    emulator.book(room, DAY + dt.timedelta(hours=14), 30)
    await service.notify(service.notifications())
    await service.settled()
    first = emulator.requests(room)
    assert first >= 3
    assert await service.converged(0)
    stored = await service.container.store.get_calendar(TENANT, room.upn)
    assert stored.extra["delta_link"]

    # The service restarts (a new engine: no delta state in memory), then a booking moves.
    await service.stop()
    service = await start_service(**page_of_one)
    runtime = service.runtime
    emulator.move(room, booking, DAY + dt.timedelta(hours=16), 30)
    await service.notify(service.notifications())
    await service.settled()
    assert await service.converged(0)
    assert runtime.worker.stats.by_calendar[(TENANT, room.upn)] == 1
    assert emulator.requests(room) - first == 1  # one delta request, not a full read
