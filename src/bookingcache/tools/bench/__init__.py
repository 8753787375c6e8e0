"""``bookingcache bench <name> [options]``: benchmarks of the service, run against real processes.

Each benchmark is a module with ``main(argv) -> int``; adding one means adding an entry to
``BENCHMARKS``. Figures and the commands that produced them are in docs/benchmarks.md.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line description)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "intake": (
        "bookingcache.tools.bench.intake",
        "Graph webhook intake against a bare Starlette handler",
    ),
    "availability": (
        "bookingcache.tools.bench.availability",
        "bulk and single-room availability through HTTP, and the server's memory",
    ),
    "freshness": (
        "bookingcache.tools.bench.freshness",
        "change in the Graph emulator to change in the availability API, end to end",
    ),
    "stream": (
        "bookingcache.tools.bench.stream",
        "many change-stream clients on one service process: delivery, CPU and memory",
    ),
    "compare": (
        "bookingcache.tools.bench.compare",
        "bookingcache's freshness and Graph cost beside calendarView and getSchedule pollers",
    ),
    "soak": (
        "bookingcache.tools.bench.soak",
        "2 API processes and 2 workers on PostgreSQL under steady load: memory, queue, freshness",
    ),
    "scale": (
        "bookingcache.tools.bench.scale",
        "refreshes per second with 1, 2 and 4 workers on PostgreSQL, 2,000 rooms under change",
    ),
    "onboard": (
        "bookingcache.tools.bench.onboard",
        "10,000 rooms linked at once: time until all are subscribed and fresh, Graph's limits",
    ),
    "graph-client": (
        "bookingcache.tools.bench.graph_client",
        "CPU per Graph read through the Graph source's transport and through httpx's own",
    ),
    "hostile": (
        "bookingcache.tools.bench.hostile",
        "oversized request targets and stalled request heads against the service",
    ),
}


def _usage() -> str:
    lines = ["usage: bookingcache bench NAME [options]", "", "benchmarks:"]
    lines += [f"  {name:<14} {about}" for name, (_, about) in BENCHMARKS.items()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        print(f"bookingcache bench: unknown benchmark {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHMARKS[name][0])
    result: int = module.main(rest)
    return result
