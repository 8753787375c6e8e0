"""The pollers ``bookingcache bench compare`` sets beside bookingcache: what customers run today
when they keep room availability without change notifications.

- ``calendarview``: one ``calendarView`` read per room every interval (60 s), as open-source
  room displays do, each room at its own phase of the interval.
- ``getschedule``: ``getSchedule`` for the rooms in batches of as many schedules as Graph takes
  in one call (20), every interval, as map platforms do; the batches spread over the interval.

Each runs as a process of its own (``python -m bookingcache.tools.bench.pollers KIND ...``), so
that its CPU is its own, and behaves like a real app: an MSAL client-credentials token from the
tenant's token endpoint, every ``@odata.nextLink`` followed, ``Retry-After`` honoured on 429 and
503, at most 4 requests at once per mailbox (Outlook's limit per app and mailbox). Its view is
what its last poll of a room returned: whenever a room's busy spans change, it appends one JSON
line ``{"t": <time.monotonic()>, "room": <index>, "busy": [[start, end], ...]}`` (epoch
seconds) to ``--out``, which the benchmark reads. The client secret comes from the environment
(``BENCH_POLLER_CLIENT_SECRET``), never from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import IO, Any

import httpx
import msal
import requests

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
# Outlook's limit per app and mailbox (testdata/graph-samples/graph-rules.json).
PER_MAILBOX = 4
# getSchedule takes at most 20 schedules per call (Graph's documented limit, the emulator's too).
SCHEDULES_PER_CALL = 20
READY = "poller ready"

Span = tuple[float, float]


def _parse_graph_time(value: dict[str, str]) -> float:
    """A UTC ``dateTimeTimeZone`` (seven fractional digits, no offset) as epoch seconds."""
    text = value["dateTime"]
    whole, _, fraction = text.partition(".")
    instant = dt.datetime.fromisoformat(whole).replace(tzinfo=dt.UTC)
    return instant.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Graph:
    """Graph requests as a polling app makes them: an app-only token, ``Retry-After`` honoured,
    at most ``PER_MAILBOX`` requests at once per mailbox."""

    def __init__(self, args: argparse.Namespace, secret: str) -> None:
        session = requests.Session()
        session.verify = args.ca_bundle
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
        self._msal = msal.ConfidentialClientApplication(
            args.client_id,
            client_credential=secret,
            authority=args.authority,
            instance_discovery=False,
            http_client=session,
        )
        self._token: tuple[str, float] | None = None
        self.http = httpx.AsyncClient(
            base_url=args.graph_url,
            verify=args.ca_bundle,
            timeout=30,
            limits=httpx.Limits(max_connections=args.connections),
            trust_env=False,
        )
        self._mailboxes: dict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(PER_MAILBOX)
        )
        self.errors = 0

    async def token(self) -> str:
        if self._token is None or time.monotonic() > self._token[1]:
            result = await asyncio.to_thread(self._msal.acquire_token_for_client, [GRAPH_SCOPE])
            if "access_token" not in result:
                raise RuntimeError(f"no token: {result.get('error_description', result)}")
            # Asked again well before it expires; MSAL answers from its cache until then.
            self._token = (result["access_token"], time.monotonic() + 300)
        return self._token[0]

    async def call(
        self, mailbox: str, method: str, url: str, **kwargs: Any
    ) -> dict[str, Any] | None:
        """One request on ``mailbox``'s behalf, retried after ``Retry-After`` while Graph
        answers 429 or 503; its JSON, or None when it failed otherwise."""
        async with self._mailboxes[mailbox]:
            while True:
                headers = {
                    "Authorization": f"Bearer {await self.token()}",
                    "Prefer": 'outlook.timezone="UTC"',
                }
                try:
                    response = await self.http.request(method, url, headers=headers, **kwargs)
                except httpx.TransportError:
                    self.errors += 1
                    return None
                if response.status_code in (429, 503):
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                    continue
                if response.status_code != 200:
                    self.errors += 1
                    return None
                body: dict[str, Any] = response.json()
                return body


class View:
    """The poller's own view: each room's busy spans as its last poll showed them."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._rooms: dict[int, list[Span]] = {}

    def show(self, room: int, busy: list[Span]) -> None:
        busy = sorted(busy)
        if self._rooms.get(room) == busy:
            return
        self._rooms[room] = busy
        line = {"t": time.monotonic(), "room": room, "busy": busy}
        self._out.write(json.dumps(line) + "\n")
        self._out.flush()


def _busy_items(items: list[dict[str, Any]]) -> list[Span]:
    return [
        (_parse_graph_time(item["start"]), _parse_graph_time(item["end"]))
        for item in items
        if not item.get("isCancelled") and item.get("showAs", item.get("status")) != "free"
    ]


async def _calendar_view(graph: Graph, args: argparse.Namespace, room: int) -> list[Span] | None:
    upn = args.mailboxes[room]
    url: str | None = f"/users/{upn}/calendarView"
    params: dict[str, str] | None = {
        "startDateTime": _iso(args.window_start),
        "endDateTime": _iso(args.window_end),
        "$select": "start,end,showAs,isCancelled",
        "$top": "50",
    }
    items: list[dict[str, Any]] = []
    while url is not None:
        page = await graph.call(upn, "GET", url, params=params)
        if page is None:
            return None
        items.extend(page.get("value", []))
        url, params = page.get("@odata.nextLink"), None  # the link carries its own query
    return _busy_items(items)


async def _get_schedule(
    graph: Graph, args: argparse.Namespace, rooms: list[int]
) -> dict[int, list[Span]]:
    answer = await graph.call(
        args.requester,
        "POST",
        f"/users/{args.requester}/calendar/getSchedule",
        json={
            "schedules": [args.mailboxes[room] for room in rooms],
            "startTime": {"dateTime": _iso(args.window_start)[:-1], "timeZone": "UTC"},
            "endTime": {"dateTime": _iso(args.window_end)[:-1], "timeZone": "UTC"},
            "availabilityViewInterval": 15,
        },
    )
    if answer is None:
        return {}
    by_upn = {args.mailboxes[room]: room for room in rooms}
    views: dict[int, list[Span]] = {}
    for schedule in answer.get("value", []):
        room = by_upn.get(schedule.get("scheduleId", ""))
        if room is not None and "error" not in schedule:
            views[room] = _busy_items(schedule.get("scheduleItems", []))
    return views


async def _every(interval: float, phase: float, poll: Callable[[], Awaitable[None]]) -> None:
    """``poll`` at ``phase``, ``phase + interval``, ...; a poll that overruns skips the ticks
    it missed instead of piling up."""
    began = time.monotonic() + phase
    tick = 0
    while True:
        due = began + tick * interval
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await poll()
        tick = max(tick + 1, int((time.monotonic() - began) / interval) + 1)


async def run(args: argparse.Namespace, secret: str) -> None:
    graph = Graph(args, secret)
    view = View(args.out_file)
    await graph.token()
    print(READY, flush=True)
    rooms = list(range(len(args.mailboxes)))
    tasks: list[asyncio.Task[None]] = []
    if args.kind == "calendarview":
        for room in rooms:

            async def poll(room: int = room) -> None:
                busy = await _calendar_view(graph, args, room)
                if busy is not None:
                    view.show(room, busy)

            phase = room * args.interval_s / len(rooms)
            tasks.append(asyncio.create_task(_every(args.interval_s, phase, poll)))
    else:
        batches = [rooms[i : i + args.batch] for i in range(0, len(rooms), args.batch)]
        for number, batch in enumerate(batches):

            async def poll_batch(batch: list[int] = batch) -> None:
                for room, busy in (await _get_schedule(graph, args, batch)).items():
                    view.show(room, busy)

            phase = number * args.interval_s / len(batches)
            tasks.append(asyncio.create_task(_every(args.interval_s, phase, poll_batch)))
    try:
        await asyncio.gather(*tasks)
    finally:
        await graph.http.aclose()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bookingcache.tools.bench.pollers", description=__doc__)
    parser.add_argument("kind", choices=("calendarview", "getschedule"))
    parser.add_argument("--graph-url", required=True)
    parser.add_argument("--authority", required=True, help="https://host/<tenant id>")
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--ca-bundle", required=True)
    parser.add_argument("--mailboxes", required=True, help="a file with one room UPN a line")
    parser.add_argument("--requester", help="the mailbox getSchedule is called on")
    parser.add_argument("--interval-s", type=float, default=60.0)
    parser.add_argument("--batch", type=int, default=SCHEDULES_PER_CALL)
    parser.add_argument("--window-start", type=float, required=True, help="epoch seconds")
    parser.add_argument("--window-end", type=float, required=True, help="epoch seconds")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--out", required=True, help="the JSON lines of the poller's view")
    return parser


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.kind == "getschedule" and not args.requester:
        parser.error("getschedule needs --requester")
    if not 1 <= args.batch <= SCHEDULES_PER_CALL:
        parser.error(f"--batch must be 1 to {SCHEDULES_PER_CALL}")
    secret = os.environ.get("BENCH_POLLER_CLIENT_SECRET", "")
    if not secret:
        parser.error("BENCH_POLLER_CLIENT_SECRET is not set")
    with open(args.mailboxes, encoding="utf-8") as listing:
        args.mailboxes = [line.strip() for line in listing if line.strip()]
    with open(args.out, "a", encoding="utf-8") as out, contextlib.suppress(KeyboardInterrupt):
        args.out_file = out
        asyncio.run(run(args, secret))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
