"""``bookingcache bench compare``: bookingcache's freshness and Graph cost beside the pollers
customers run today, on the same activity in the same run.

One Graph emulator (TLS, loopback) holds the rooms (1,000 in two buildings by default) and plays
an office day on them (``office.py``): a busy window (an office hour's changes) and then a quiet
one, each ``--window-s`` seconds of real time. Five contenders follow it, each with an app
registration of its own at the emulator, which counts every contender's Graph requests apart
(``$batch`` members one each), whoever makes them:

- ``bookingcache-alt1-graph``: Graph notifies the service, which reads the calendars itself;
- ``bookingcache-alt2-connector``: Graph notifies the customer's connector, whose relay calls
  the service, which reads the calendars through the connector;
- ``bookingcache-alt2-push``: as above, the relay's calls carrying the events;
- ``poll-calendarview``: a room-display poller, one calendarView read per room per interval;
- ``poll-getschedule``: a map-platform poller, getSchedule in batches of 20 per interval.

Every bookingcache contender is its own ``bookingcache serve`` process (its own SQLite database;
with its own connector process for Alternative 2); every poller its own process
(``pollers.py``). A change's staleness runs from just before its control call at the emulator to
the first moment the contender shows it: for bookingcache the first answer of the bulk
availability API that shows it (asked every ``--observe-ms`` for the rooms with changes not yet
shown), for a poller the moment its own view took it in. A change not shown within the end of
its window plus the grace period counts as never shown. CPU seconds are the user and system time
of the contender's processes over the windows (/proc), all contenders running at once.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import json
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bookingcache.tools.bench import compare_setup, freshness
from bookingcache.tools.bench.activity import TENANT, room_id
from bookingcache.tools.bench.compare_setup import POLLERS, SERVICES, Contender
from bookingcache.tools.bench.http import BenchError, percentile, report
from bookingcache.tools.bench.office import Change, Office

WINDOWS = ("busy", "quiet")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bookingcache bench compare", description=__doc__)
    parser.add_argument("--rooms", type=int, default=1000, help="rooms, in two buildings")
    parser.add_argument("--window-s", type=float, default=300.0, help="seconds per window")
    parser.add_argument("--poll-interval-s", type=float, default=60.0, help="the pollers'")
    parser.add_argument(
        "--grace-s", type=float, help="after a window (default: two poll intervals)"
    )
    parser.add_argument(
        "--busy-per-room-hour", type=float, default=2.0, help="changes in the busy window"
    )
    parser.add_argument(
        "--quiet-per-room-hour", type=float, default=0.2, help="changes in the quiet window"
    )
    parser.add_argument("--observe-ms", type=float, default=100.0, help="availability polling")
    parser.add_argument(
        "--debounce-s", type=float, default=0.5, help="the services' notification debounce"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--plot", type=Path, help="draw the figures into this PNG")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


# --- the contenders' processes ---------------------------------------------------------------


# --- watching the contenders -----------------------------------------------------------------


def _epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def _watch_service(contender: Contender, office: Office, every_s: float) -> None:
    start, end = (dt.datetime.fromtimestamp(t, dt.UTC).isoformat() for t in office.view)
    async with freshness._admin(contender.url) as client:
        while True:
            rooms = sorted(room for room, waiting in contender.pending.items() if waiting)
            if rooms:
                answer = await client.post(
                    f"/v1/tenants/{TENANT}/availability",
                    json={"rooms": [room_id(r) for r in rooms], "start": start, "end": end},
                )
                at = time.monotonic()
                if answer.status_code != 200:
                    raise BenchError(f"{contender.name}: availability {answer.status_code}")
                for row in answer.json()["rooms"]:
                    busy = [(_epoch(s["start"]), _epoch(s["end"])) for s in row["busy"]]
                    contender.show(int(row["room_id"].split("-")[1]), at, busy)
            await asyncio.sleep(every_s)


async def _watch_poller(contender: Contender) -> None:
    assert contender.view_file is not None
    with contender.view_file.open(encoding="utf-8") as lines:
        while True:
            line = lines.readline()
            if not line.endswith("\n"):
                if line:
                    lines.seek(lines.tell() - len(line.encode()))
                await asyncio.sleep(0.25)
                continue
            row = json.loads(line)
            contender.show(row["room"], row["t"], [tuple(span) for span in row["busy"]])


async def _counters(control: httpx.AsyncClient) -> dict[str, Any]:
    answer = await control.get("/counters")
    counters: dict[str, Any] = answer.json()
    return counters


# What a service's own /metrics say of its Graph cost in a window (``_service_counts``).
_COUNTED = {
    "bookingcache_sync_refreshes_total": ("refreshes", "outcome"),
    "bookingcache_sync_sweep_reads_total": ("sweep_reads", "bound"),
}


async def _service_counts(contender: Contender) -> dict[str, dict[str, float]]:
    """The service's refreshes by outcome and the sweep's reads by bound, so far."""
    counts: dict[str, dict[str, float]] = {"refreshes": {}, "sweep_reads": {}}
    if not contender.url:
        return counts
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.get(f"{contender.url}/metrics")
    if answer.status_code != 200:
        raise BenchError(f"{contender.name}'s /metrics answered {answer.status_code}")
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            counted = _COUNTED.get(sample.name)
            if counted is not None:
                kind, label = counted
                counts[kind][sample.labels[label]] = sample.value
    return counts


def _delta(
    after: dict[str, dict[str, float]], before: dict[str, dict[str, float]]
) -> dict[str, dict[str, int]]:
    return {
        kind: {
            key: round(value - before[kind].get(key, 0.0))
            for key, value in sorted(values.items())
            if value - before[kind].get(key, 0.0)
        }
        for kind, values in after.items()
    }


async def _measure(
    args: argparse.Namespace, info: dict[str, Any], office: Office, contenders: list[Contender]
) -> dict[str, Any]:
    verify = ssl.create_default_context(cafile=info["cert_path"])
    grace = args.grace_s if args.grace_s is not None else 2 * args.poll_interval_s
    watchers = [
        asyncio.create_task(
            _watch_service(c, office, args.observe_ms / 1000)
            if c.view_file is None
            else _watch_poller(c)
        )
        for c in contenders
    ]

    def expect(change: Change) -> None:
        for contender in contenders:
            contender.expect(change)

    marks: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(
        base_url=info["control_url"], verify=verify, timeout=30
    ) as control:
        try:
            rates = {"busy": args.busy_per_room_hour, "quiet": args.quiet_per_room_hour}
            for window in WINDOWS:
                began, before = time.monotonic(), await _counters(control)
                cpu = {c.name: c.cpu_s() for c in contenders}
                own_before = {c.name: await _service_counts(c) for c in contenders}
                per_hour = rates[window] * args.rooms
                await office.drive(control, window, per_hour, args.window_s, expect)
                after = await _counters(control)
                own = {
                    c.name: _delta(await _service_counts(c), own_before[c.name]) for c in contenders
                }
                marks[window] = {
                    "seconds": time.monotonic() - began,
                    "ended": time.monotonic(),
                    "requests": {
                        c.name: after["requests_per_app"].get(c.client_id, 0)
                        - before["requests_per_app"].get(c.client_id, 0)
                        for c in contenders
                    },
                    "throttled": {
                        c.name: after["throttled_per_app"].get(c.client_id, 0)
                        - before["throttled_per_app"].get(c.client_id, 0)
                        for c in contenders
                    },
                    "cpu_s": {c.name: c.cpu_s() - cpu[c.name] for c in contenders},
                    "own": own,
                }
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if not any(any(c.pending.values()) for c in contenders):
                    break
                await asyncio.sleep(0.5)
        finally:
            for watcher in watchers:
                watcher.cancel()
            failed = await asyncio.gather(*watchers, return_exceptions=True)
    for outcome in failed:
        if isinstance(outcome, Exception) and not isinstance(outcome, asyncio.CancelledError):
            raise BenchError(f"watching a contender failed: {outcome!r}") from outcome
    return _figures(args, grace, office, contenders, marks)


def _figures(
    args: argparse.Namespace,
    grace: float,
    office: Office,
    contenders: list[Contender],
    marks: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    seconds = sum(marks[w]["seconds"] for w in WINDOWS)
    figures: dict[str, Any] = {}
    for contender in contenders:
        name = contender.name
        staleness: list[float] = []
        never = 0
        never_kinds: dict[str, int] = {}
        for change in office.changes:
            seen = change.seen.get(name)
            if seen is None or seen > marks[change.window]["ended"] + grace:
                never += 1
                never_kinds[change.kind] = never_kinds.get(change.kind, 0) + 1
            else:
                staleness.append((seen - change.sent) * 1000)
        requests = {w: marks[w]["requests"][name] for w in WINDOWS}
        per_hour = {w: requests[w] * 3600 / marks[w]["seconds"] for w in WINDOWS}
        total_per_hour = sum(requests.values()) * 3600 / seconds
        figures[name] = {
            "staleness_p50_ms": round(percentile(staleness, 0.5), 1) if staleness else None,
            "staleness_p99_ms": round(percentile(staleness, 0.99), 1) if staleness else None,
            "staleness_max_ms": round(max(staleness), 1) if staleness else None,
            "shown": len(staleness),
            "never_shown": never,
            "never_shown_kinds": never_kinds,
            "graph_requests": requests,
            "graph_requests_per_hour": round(total_per_hour),
            "graph_requests_per_hour_busy": round(per_hour["busy"]),
            "graph_requests_per_hour_quiet": round(per_hour["quiet"]),
            "graph_requests_per_room_hour": round(total_per_hour / args.rooms, 3),
            "throttled": sum(marks[w]["throttled"][name] for w in WINDOWS),
            "cpu_s": round(sum(marks[w]["cpu_s"][name] for w in WINDOWS), 2),
            "cpu_s_busy": round(marks["busy"]["cpu_s"][name], 2),
            "cpu_s_quiet": round(marks["quiet"]["cpu_s"][name], 2),
            "staleness_ms": sorted(round(s, 1) for s in staleness),
        }
        if contender.url:
            # What the service's own /metrics counted in each window: what its Graph
            # requests were made of (a push service reads nothing: its connector does).
            figures[name]["own_counts"] = {w: marks[w]["own"][name] for w in WINDOWS}
    return {
        "rooms": args.rooms,
        "window_s": args.window_s,
        "poll_interval_s": args.poll_interval_s,
        "grace_s": grace,
        "changes": {w: sum(1 for c in office.changes if c.window == w) for w in WINDOWS},
        "change_kinds": {
            kind: sum(1 for c in office.changes if c.kind == kind)
            for kind in sorted({c.kind for c in office.changes})
        },
        "control_failures": office.failures,
        "changes_skipped": office.skipped,
        "contenders": figures,
    }


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    began = time.monotonic()
    grace = args.grace_s if args.grace_s is not None else 2 * args.poll_interval_s
    office = Office(rooms=args.rooms, seed=args.seed, grace_s=grace, started=time.time())
    with (
        tempfile.TemporaryDirectory(prefix="bookingcache-compare-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        root = Path(tmp)
        info = stack.enter_context(compare_setup.emulator(root, args.rooms))
        apps = info["apps"]
        contenders = [Contender(name, apps[name]["client_id"]) for name in (*SERVICES, *POLLERS)]
        try:
            phases: dict[str, float] = {}
            # The calendars are seeded while the services start: nothing subscribes before
            # the rooms are imported.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                seeding = pool.submit(asyncio.run, compare_setup.seed_calendars(info, office))
                services = [c for c in contenders if c.name in SERVICES]
                compare_setup.start_services(stack, args, info, root, services)
                seeded = seeding.result()
            phases["seed_and_start_s"] = round(time.monotonic() - began, 1)
            verify = ssl.create_default_context(cafile=info["cert_path"])
            asyncio.run(compare_setup.first_syncs(services, verify))
            phases["first_sync_s"] = round(time.monotonic() - began - sum(phases.values()), 1)
            for contender in contenders:
                if contender.name in POLLERS:
                    compare_setup.start_poller(stack, args, info, root, office, contender)
            setup_s = time.monotonic() - began
            result = asyncio.run(_measure(args, info, office, contenders))
        except BenchError:
            for log in sorted(root.glob("**/*.log")):
                sys.stderr.write(f"--- {log.name}\n{log.read_text()[-2000:]}")
            raise
    result["seeded_meetings"] = seeded
    result["setup_s"] = round(setup_s, 1)
    result["setup_phases_s"] = phases
    result["wall_s"] = round(time.monotonic() - began, 1)
    if args.plot is not None:
        from bookingcache.tools.bench.compare_plot import plot

        plot(result, args.plot)
    for figures in result["contenders"].values():
        del figures["staleness_ms"]  # the plot's; too long for the report
    report(result, as_json=args.json)
    return 0
