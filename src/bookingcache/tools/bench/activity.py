"""What ``bookingcache bench freshness`` does once everything runs: it books, moves and cancels
meetings through the emulator's control API at a fixed rate (``Run.drive``), polls the bulk
availability API for the rooms whose changes it has not seen yet (``Run.observe``), follows the
change stream of every floor (``Run.on_stream``), and sums up (``measure``).

Every change alters what the stream shows of its room, so that each has a stream latency too:
a booking (or a booking moved) takes a slot earlier than any the room was given before, so it
becomes the room's next meeting; a cancellation takes the room's next meeting away, and is made
only when no earlier booking of the room is still unconfirmed (else a booking is made instead).
A change is seen on the stream by the first ``room`` event of its room, arriving after the
change was sent, whose next meeting starts where the change says (or, cancelled, no longer
there), or where a later change of the room says: the stream sends states, and one refresh may
carry two changes of a calendar."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import random
import ssl
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bookingcache.contract.aiohttp_transport import AiohttpTransport
from bookingcache.tools.bench.http import BenchError, paced, percentile
from bookingcache.tools.bench.sse import StreamClient

TENANT = "bench"
ADMIN_TOKEN = "bench-admin-" + "0123456789abcdef"
ORGANIZER = "organizer@bench.example"
SLOT = dt.timedelta(minutes=30)
BOOKING = dt.timedelta(minutes=15)
SLOTS_PER_ROOM = 10 * 48
ROOMS_PER_FLOOR = 100


def mailbox(index: int) -> str:
    return f"room-{index:04d}@bench.example"


def room_id(index: int) -> str:
    return f"room-{index:04d}"


def floor_of(index: int) -> str:
    return str(index // ROOMS_PER_FLOOR)


@dataclass(slots=True)
class Change:
    room: int
    busy: tuple[dt.datetime, dt.datetime] | None  # must show as busy
    free: tuple[dt.datetime, dt.datetime] | None  # must no longer show as busy
    sent: float
    booking: str | None = None
    slot: int | None = None  # the slot the booking holds once this change is seen
    seen: float | None = None
    # The stream shows it when the room's next meeting starts at ``next_start`` (or, for a
    # cancellation, no longer does).
    next_start: str = ""
    cancelled: bool = False
    stream_seen: float | None = None


# A change, and the control API call that makes it: (change, method, path, JSON body).
Request = tuple[Change, str, str, dict[str, str] | None]


def _iso(instant: dt.datetime) -> str:
    return instant.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _covered(
    span: tuple[dt.datetime, dt.datetime], busy: list[tuple[dt.datetime, dt.datetime]]
) -> bool:
    return any(start <= span[0] and span[1] <= end for start, end in busy)


def admin_client(service: str) -> httpx.AsyncClient:
    """A client of a service process's API, with the benchmark's admin token."""
    return httpx.AsyncClient(
        base_url=service,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
        limits=httpx.Limits(max_connections=8),
    )


async def control_call(
    control: httpx.AsyncClient, method: str, path: str, body: dict[str, str] | None
) -> httpx.Response | None:
    """A call of the emulator's control API; None when it failed (no answer, or not 2xx)."""
    try:
        response = await control.request(method, path, json=body)
    except httpx.TransportError:
        return None
    return response if response.status_code < 300 else None


class Run:
    def __init__(
        self, args: argparse.Namespace, service: str, control: str, verify: ssl.SSLContext
    ) -> None:
        self.args = args
        self.service = admin_client(service)
        # The control calls go over aiohttp's pool: with many calls waiting for one of its 32
        # connections, httpx's own pool spent half of the benchmark's interpreter time matching
        # calls to connections (a 100 changes/s soak), which delayed the changes it timed.
        self.control = httpx.AsyncClient(
            base_url=control,
            timeout=30,
            transport=AiohttpTransport(verify=verify, limits=httpx.Limits(max_connections=32)),
        )
        self.rng = random.Random(args.seed)  # noqa: S311 (a reproducible workload)
        self.driven = False
        self.drained = asyncio.Event()
        self.changes: list[Change] = []
        self.pending: list[Change] = []
        # room -> booking id -> slot index, for bookings whose creation was seen
        self.bookings: dict[int, dict[str, int]] = {}
        base = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self.first_slot = base + dt.timedelta(days=1)
        self.window = (base, base + dt.timedelta(days=12))
        self.failures = 0
        self.poll_errors = 0
        # The slot below every one the room was given: the next booking's.
        self.lowest: dict[int, int] = {}
        self.stream_pending: dict[int, list[Change]] = {}
        self.stream_events = 0
        self.streamed = asyncio.Event()  # set by every stream event

    def span(self, slot: int) -> tuple[dt.datetime, dt.datetime]:
        start = self.first_slot + slot * SLOT
        return start, start + BOOKING

    def take_slot(self, room: int) -> int:
        """A slot earlier than any the room was given (its next meeting once booked)."""
        slot = self.lowest.get(room, SLOTS_PER_ROOM) - 1
        if slot < 0:
            raise BenchError("a room ran out of slots: use more rooms or a shorter run")
        self.lowest[room] = slot
        return slot

    async def mutate(self) -> None:
        room = self.rng.randrange(self.args.rooms)
        confirmed = self.bookings.get(room, {})
        roll = self.rng.random()
        sent = time.perf_counter()
        earliest = min(confirmed.items(), key=lambda item: item[1]) if confirmed else None
        if confirmed and roll < 0.25:
            booking, old = self.rng.choice(list(confirmed.items()))
            del confirmed[booking]
            request = self.move(room, booking, old, self.take_slot(room), sent)
        elif earliest is not None and earliest[1] == self.lowest[room] and roll < 0.40:
            booking, old = earliest
            del confirmed[booking]
            request = self.cancel(room, booking, old, sent)
        else:
            request = self.book(room, self.take_slot(room), sent)
        await self.send(*request)

    def book(self, room: int, slot: int, sent: float) -> Request:
        """A new booking of ``slot`` in ``room``."""
        start, end = self.span(slot)
        change = Change(room, (start, end), None, sent, slot=slot)
        change.next_start = _iso(start)
        body = {"organizer": ORGANIZER, "subject": "Bench", "start": _iso(start), "end": _iso(end)}
        return change, "POST", f"/mailboxes/{mailbox(room)}/bookings", body

    def move(self, room: int, booking: str, old: int, new: int, sent: float) -> Request:
        """``booking`` moved from slot ``old`` to slot ``new``."""
        start, end = self.span(new)
        change = Change(room, (start, end), self.span(old), sent, booking, slot=new)
        change.next_start = _iso(start)
        path = f"/mailboxes/{mailbox(room)}/events/{booking}/move"
        return change, "POST", path, {"start": _iso(start), "end": _iso(end)}

    def cancel(self, room: int, booking: str, old: int, sent: float) -> Request:
        """``booking``, in slot ``old``, cancelled."""
        change = Change(room, None, self.span(old), sent, booking)
        change.next_start, change.cancelled = _iso(self.span(old)[0]), True
        return change, "DELETE", f"/mailboxes/{mailbox(room)}/events/{booking}", None

    async def send(
        self, change: Change, method: str, path: str, body: dict[str, str] | None
    ) -> None:
        """Make ``change`` at the emulator; it counts once the emulator took it."""
        room = change.room
        self.pending.append(change)
        # Before the call: its event may arrive before the call's answer does.
        if not self.args.no_stream:
            self.stream_pending.setdefault(room, []).append(change)
        response = await control_call(self.control, method, path, body)
        if response is None:
            # Not a change the service could ever show: left out of the figures, counted.
            self.failures += 1
            if change in self.pending:
                self.pending.remove(change)
            if change in self.stream_pending.get(room, []):
                self.stream_pending[room].remove(change)
            return
        if change.booking is None:
            change.booking = str(response.json()["id"])
        self.changes.append(change)

    def on_stream(self, event: str, data: bytes, _id: str | None, arrived: float) -> None:
        """A change-stream event: the room's pending changes it shows are seen."""
        if event != "room":
            return
        self.stream_events += 1
        self.streamed.set()
        state = json.loads(data)
        room = int(state["room"].split("-")[1])
        waiting = self.stream_pending.get(room)
        if not waiting:
            return
        upcoming = state["next"]["start"] if state["next"] else None
        shown = [
            change
            for change in waiting
            if (upcoming != change.next_start) == change.cancelled and change.sent < arrived
        ]
        if not shown:
            return
        # A state that shows a change holds the room's earlier changes too (two refreshes of
        # one calendar may have become one, and the stream shows states, not each write).
        newest = max(change.sent for change in shown)
        for change in waiting:
            if change.sent <= newest:
                change.stream_seen = arrived
        self.stream_pending[room] = [change for change in waiting if change.sent > newest]

    async def observe_once(self) -> None:
        if not self.pending:
            if self.driven:
                self.drained.set()
            return
        rooms = sorted({change.room for change in self.pending})
        try:
            response = await self.service.post(
                f"/v1/tenants/{TENANT}/availability",
                json={
                    "rooms": [room_id(room) for room in rooms],
                    "start": _iso(self.window[0]),
                    "end": _iso(self.window[1]),
                },
            )
        except httpx.TransportError:
            self.poll_errors += 1
            return
        now = time.perf_counter()
        if response.status_code != 200:
            raise BenchError(f"availability answered {response.status_code}: {response.text[:300]}")
        busy: dict[int, list[tuple[dt.datetime, dt.datetime]]] = {}
        for answer in response.json()["rooms"]:
            index = int(answer["room_id"].split("-")[1])
            busy[index] = [
                (dt.datetime.fromisoformat(span["start"]), dt.datetime.fromisoformat(span["end"]))
                for span in answer["busy"]
            ]
        still: list[Change] = []
        for change in self.pending:
            spans = busy.get(change.room, [])
            shown = (change.busy is None or _covered(change.busy, spans)) and (
                change.free is None or not _covered(change.free, spans)
            )
            if shown and change.booking is not None:
                change.seen = now
                if change.slot is not None:
                    # Seen: a later move or cancel may pick this booking.
                    self.bookings.setdefault(change.room, {})[change.booking] = change.slot
            else:
                still.append(change)
        self.pending = still
        if self.driven and not self.pending:
            self.drained.set()

    async def drive(self) -> None:
        tasks: set[asyncio.Task[None]] = set()
        async for _ in paced(self.args.rate, self.args.duration):
            task = asyncio.create_task(self.mutate())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    async def observe(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.observe_once()
            await asyncio.sleep(self.args.poll_ms / 1000)

    async def aclose(self) -> None:
        await self.service.aclose()
        await self.control.aclose()


def _stream_pending(run: Run) -> int:
    return sum(
        1 for waiting in run.stream_pending.values() for change in waiting if change in run.changes
    )


async def measure(
    args: argparse.Namespace, info: dict[str, Any], service_url: str, verify: ssl.SSLContext
) -> dict[str, Any]:
    run = Run(args, service_url, info["control_url"], verify)
    floors = sorted({floor_of(index) for index in range(args.rooms)}, key=int)
    if args.no_stream:
        floors = []
    streams = [
        StreamClient(
            service_url,
            f"/v1/tenants/{TENANT}/stream?building=HQ&floor={floor}",
            ADMIN_TOKEN,
            run.on_stream,
        )
        for floor in floors
    ]
    readers = [asyncio.create_task(stream.run()) for stream in streams]
    try:
        await asyncio.wait_for(asyncio.gather(*(s.connected.wait() for s in streams)), 30)
        await run.control.post("/counters/reset")
        stop = asyncio.Event()
        observer = asyncio.create_task(run.observe(stop))
        await run.drive()
        run.driven = True
        deadline = time.perf_counter() + args.settle
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.drained.wait(), timeout=args.settle)
        while _stream_pending(run) and time.perf_counter() < deadline:
            run.streamed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.streamed.wait(), deadline - time.perf_counter())
        stop.set()
        await observer
        counters = (await run.control.get("/counters")).json()
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await run.aclose()
    latencies = [(c.seen - c.sent) * 1000 for c in run.changes if c.seen is not None]
    streamed = [(c.stream_seen - c.sent) * 1000 for c in run.changes if c.stream_seen is not None]
    requests = sum(counters.get("requests_per_mailbox", {}).values())
    if not latencies:
        raise BenchError("no change became visible")
    return {
        "rooms": args.rooms,
        "rate_per_s": args.rate,
        "duration_s": args.duration,
        "mutations": len(run.changes),
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1),
        "graph_requests_per_mutation": round(requests / max(1, len(run.changes)), 3),
        "graph_throttled": counters.get("throttled", 0),
        "lost": len(run.pending),
        "stream_p50_ms": round(percentile(streamed, 0.50), 1) if streamed else None,
        "stream_p99_ms": round(percentile(streamed, 0.99), 1) if streamed else None,
        "stream_lost": _stream_pending(run),
        "stream_events": run.stream_events,
        "control_failures": run.failures,
        "poll_errors": run.poll_errors,
        "split": args.split,
        "alternative": args.alternative,
        "source": args.source,
    }
