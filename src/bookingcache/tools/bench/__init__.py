"""``bookingcache bench <name> [options]``: benchmarks of the service, run against real processes.

Each benchmark is a module with ``main(argv) -> int``; adding one means adding an entry to
``BENCHMARKS``. Figures and the commands that produced them are in docs/benchmarks.md.

A benchmark stopped with SIGTERM (``kill``, a CI job's time limit) stops as with Ctrl-C: its
``finally`` blocks run, so the processes it started are stopped, the database it made is dropped
and its temporary directory removed, and it exits with 128 plus the signal's number.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

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
    with _stopping() as stopped_by:
        try:
            result: int = module.main(rest)
        except KeyboardInterrupt:
            number = stopped_by[0] if stopped_by else signal.SIGINT
            print(
                f"bookingcache bench {name}: stopped ({signal.Signals(number).name})",
                file=sys.stderr,
            )
            return 128 + number
    return result


@contextlib.contextmanager
def _stopping() -> Iterator[list[int]]:
    """SIGTERM handled as SIGINT while the block runs: the handler raises SIGINT in this
    process, which its handler at that moment turns into a ``KeyboardInterrupt`` (or, inside
    ``asyncio.run``, into the main task's cancellation, as Ctrl-C does); where SIGINT has no
    handler of Python's, it raises ``KeyboardInterrupt`` itself. Yields the list that
    receives SIGTERM's number once it came. Only the main thread can set handlers: elsewhere
    (a benchmark called from a test's thread) nothing changes."""
    stopped_by: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield stopped_by
        return

    def on_sigterm(number: int, _frame: FrameType | None) -> None:
        stopped_by.append(number)
        if callable(signal.getsignal(signal.SIGINT)):
            signal.raise_signal(signal.SIGINT)
        else:
            # SIGINT ignored (a shell's background job) or left to the system: no handler of
            # this process's would run, so interrupt here.
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield stopped_by
    finally:
        signal.signal(signal.SIGTERM, previous)
