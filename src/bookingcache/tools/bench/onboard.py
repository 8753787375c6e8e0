"""``bookingcache bench onboard``: a large customer links all its rooms at once. How long until
every room is subscribed and the map is complete, and does anything get throttled on the way?

A Graph emulator (TLS, real time, Graph's limits enforced: 4 concurrent requests and 10,000 per
10 minutes per app and mailbox, 130,000 per 10 s per app, and the subscription API's 500 writes
per 20 s per app and tenant) holds ``--rooms`` room mailboxes. The service (``bookingcache
serve``, SQLite unless ``--database-url``) has one tenant whose connector (a process of its own,
Alternative 2 by default) creates the subscriptions the service's orchestration asks for. The
benchmark links every room in one ``rooms:import`` call, then polls the tenant's onboarding
progress (``GET /v1/tenants/{tenant}/onboarding``) until every room is subscribed and fresh
(its calendar read once), timing both from the import. ``--plot`` draws what each poll showed.

The emulator's counters, reset just before the import, give ``requests`` (every Graph request
of every app, a ``$batch`` member each), ``throttled`` (429s), ``peak_per_mailbox`` (the most
requests in flight on one mailbox) and ``over_limit``: how far the busiest window of each
limited budget went beyond Graph's documented limit, summed (the emulator refuses what goes
beyond, so anything but 0 means it let through what Graph would have refused).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from bookingcache.tools.bench.activity import ADMIN_TOKEN, TENANT
from bookingcache.tools.bench.freshness import (
    child,
    create_tenant,
    emulator_command,
    emulator_ready,
    import_rooms,
    seed_file,
    service_env,
    start_connector,
)
from bookingcache.tools.bench.http import BenchError, report
from bookingcache.tools.processes import free_port, serve_command

# Graph's documented limits the emulator enforces (its config), by the counter of each
# budget's busiest window.
LIMITS = {
    "subscription_writes_peak": 500,  # subscription API writes per 20 s per app and tenant
    "mailbox_requests_peak": 10_000,  # Outlook requests per 10 min per app and mailbox
    "app_requests_peak": 130_000,  # requests per 10 s per app
}
MAILBOX_CONCURRENCY = 4
# The targets: every room fresh within this long of the import.
FRESH_WITHIN_S = 900.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bookingcache bench onboard", description=__doc__)
    parser.add_argument("--rooms", type=int, default=10_000)
    parser.add_argument(
        "--database-url",
        help="an EMPTY database for the service (default: SQLite in a temporary directory)",
    )
    parser.add_argument(
        "--alternative",
        type=int,
        choices=(1, 2),
        default=2,
        help="1: Graph notifies the service; 2: Graph notifies the connector's relay",
    )
    parser.add_argument(
        "--source",
        choices=("graph", "connector"),
        default="graph",
        help="the tenant's event source: the service reads Graph, or reads through the connector",
    )
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds to wait for every room to be fresh"
    )
    parser.add_argument("--poll-s", type=float, default=1.0, help="progress polling")
    parser.add_argument("--plot", type=Path, help="draw the progress into this PNG")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def over_limit(counters: Mapping[str, Any]) -> int:
    """Requests beyond Graph's documented limits in the emulator's counters, summed over the
    limited budgets (the busiest window of each) and the mailboxes' concurrency."""
    beyond = sum(max(0, int(counters.get(name, 0)) - limit) for name, limit in LIMITS.items())
    concurrency = counters.get("max_concurrency_per_mailbox", {}).values()
    return beyond + sum(max(0, int(peak) - MAILBOX_CONCURRENCY) for peak in concurrency)


async def watch(
    args: argparse.Namespace, service_url: str, control: httpx.AsyncClient
) -> dict[str, Any]:
    """Import the rooms and poll the tenant's progress until every room is fresh (or the
    timeout); the figures."""
    await control.post("/counters/reset")
    began = time.monotonic()
    await import_rooms(args, service_url)
    imported_s = time.monotonic() - began
    subscribed_s: float | None = None
    fresh_s: float | None = None
    progress: dict[str, Any] = {}
    # What the operator saw at each poll: (seconds since the import, subscribed, fresh).
    seen: list[tuple[float, int, int]] = []
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=service_url, headers=headers, timeout=60) as service:
        while fresh_s is None and time.monotonic() - began < args.timeout:
            answer = await service.get(f"/v1/tenants/{TENANT}/onboarding")
            if answer.status_code != 200:
                raise BenchError(f"reading the progress failed: {answer.text[:300]}")
            progress = answer.json()
            at = time.monotonic() - began
            seen.append((round(at, 2), progress["subscribed"], progress["fresh"]))
            if subscribed_s is None and progress["subscribed"] >= args.rooms:
                subscribed_s = at
            if progress["fresh"] >= args.rooms:
                fresh_s = at
            else:
                await asyncio.sleep(args.poll_s)
    counters: dict[str, Any] = (await control.get("/counters")).json()
    peak = max(counters.get("max_concurrency_per_mailbox", {}).values(), default=0)
    beyond = over_limit(counters)
    return {
        "rooms": args.rooms,
        "import_s": round(imported_s, 2),
        "all_subscribed_s": None if subscribed_s is None else round(subscribed_s, 1),
        "all_fresh_s": None if fresh_s is None else round(fresh_s, 1),
        "subscribed": progress.get("subscribed", 0),
        "fresh": progress.get("fresh", 0),
        "requests": sum(counters.get("requests_per_app", {}).values()),
        "throttled": sum(counters.get("throttled_per_app", {}).values()),
        "subscription_api_throttled": counters.get("subscription_api_throttled", 0),
        "mailbox_throttled": counters.get("throttled", 0),
        "subscription_writes_peak_20s": counters.get("subscription_writes_peak", 0),
        "over_limit": beyond,
        "peak_per_mailbox": peak,
        "targets_met": fresh_s is not None
        and fresh_s <= FRESH_WITHIN_S
        and beyond == 0
        and peak <= MAILBOX_CONCURRENCY,
        "progress": seen,
    }


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.rooms <= 0:
        parser.error("--rooms must be positive")
    with tempfile.TemporaryDirectory(prefix="bookingcache-onboard-") as tmp:
        root = Path(tmp)
        seed = root / "seed.json"
        seed_file(seed, args.rooms)
        with contextlib.ExitStack() as stack:
            emulator = stack.enter_context(
                child(
                    emulator_command(root, seed),
                    os.environ,
                    log=root / "emulator.log",
                    ready=emulator_ready,
                )
            )
            info: dict[str, Any] = json.loads(emulator.banner)
            data_dir = root / "service"
            database_url = args.database_url or f"sqlite:///{data_dir / 'bookingcache.db'}"
            service = stack.enter_context(
                child(
                    serve_command(data_dir, "--database-url", database_url),
                    service_env(info),
                    log=root / "service.log",
                )
            )
            service_url = service.banner_url
            connector_port = free_port()
            verify = ssl.create_default_context(cafile=info["cert_path"])
            try:
                secret = asyncio.run(
                    create_tenant(
                        args, service_url, f"http://127.0.0.1:{connector_port}", info["tenant_id"]
                    )
                )
                start_connector(stack, args, info, root, service_url, secret, connector_port)
                result = asyncio.run(_run(args, service_url, info["control_url"], verify))
            except BenchError:
                for name in ("service", "connector"):
                    if (root / f"{name}.log").exists():
                        print((root / f"{name}.log").read_text()[-3000:], file=sys.stderr)
                raise
    if args.plot is not None:
        from bookingcache.tools.bench.onboard_plot import plot

        plot(result, args.plot, fresh_within_s=FRESH_WITHIN_S)
    del result["progress"]  # the plot's; too long for the report
    report(result, as_json=args.json)
    return 0


async def _run(
    args: argparse.Namespace, service_url: str, control_url: str, verify: ssl.SSLContext
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=control_url, verify=verify, timeout=30) as control:
        return await watch(args, service_url, control)
