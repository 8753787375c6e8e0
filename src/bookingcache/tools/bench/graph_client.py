"""``bookingcache bench graph-client``: the CPU the Graph source's HTTP client spends on one
kept-alive read of a calendarView delta page, through its transport (aiohttp's pool,
``contract.aiohttp_transport``) and through httpx's own (httpcore's pool, ``contract.pool``),
in the same run.

A server of one page (``python -m graph_emulator.page_server``, TLS, its own process) answers
every request with the same page, so the figures are the client's: this process's user and
system CPU (``/proc``) over ``--requests`` GETs at ``--concurrency``, made as the Graph
source makes them (``httpx.AsyncClient`` with its settings, a bearer token and the ``Prefer``
header, the body read). The two transports alternate over ``--rounds`` rounds; ``ratio`` is the
transport's CPU per request over httpx's own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from bookingcache.contract.aiohttp_transport import AiohttpTransport
from bookingcache.contract.pool import PooledTransport
from bookingcache.tools.bench.http import BenchError, cpu_s, report
from bookingcache.tools.bench.http import server as bench_server

_PREFER = 'outlook.timezone="UTC", odata.maxpagesize=50'
_PATH = "/v1.0/users/room@contoso.test/calendarView/delta?$deltatoken=R0usmci39OQxqJrxK4"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bookingcache bench graph-client")
    parser.add_argument("--requests", type=int, default=4000, help="requests per round and way")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternating the two ways")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _cpu_s() -> float:
    """This process's CPU seconds, all its threads."""
    return cpu_s(os.getpid())


async def _round(
    make: Callable[[], httpx.AsyncBaseTransport],
    url: str,
    trusted: ssl.SSLContext,
    *,
    requests: int,
    concurrency: int,
) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``requests`` GETs through a new client on ``make()``."""
    async with httpx.AsyncClient(
        transport=make(), timeout=30, verify=trusted, trust_env=False, follow_redirects=False
    ) as client:
        headers = {"Authorization": "Bearer bench-token", "Prefer": _PREFER}

        async def one(count: int) -> None:
            for _ in range(count):
                response = await client.get(url, headers=headers)
                if response.status_code != 200 or not response.content:
                    raise BenchError(f"the page server answered {response.status_code}")

        await asyncio.gather(*(one(10) for _ in range(concurrency)))  # connections made
        share, extra = divmod(requests, concurrency)
        cpu, wall = _cpu_s(), time.perf_counter()
        await asyncio.gather(*(one(share + (n < extra)) for n in range(concurrency)))
        return _cpu_s() - cpu, time.perf_counter() - wall


async def _measure(url: str, trusted: ssl.SSLContext, args: argparse.Namespace) -> dict[str, float]:
    ways: dict[str, Callable[[], httpx.AsyncBaseTransport]] = {
        "aiohttp": lambda: AiohttpTransport(verify=trusted),
        "httpx": lambda: PooledTransport(verify=trusted),
    }
    cpu = dict.fromkeys(ways, 0.0)
    wall = dict.fromkeys(ways, 0.0)
    for _ in range(args.rounds):
        for name, make in ways.items():
            used, took = await _round(
                make, url, trusted, requests=args.requests, concurrency=args.concurrency
            )
            cpu[name] += used
            wall[name] += took
    total = args.requests * args.rounds
    if min(cpu.values()) <= 0:
        raise BenchError("too few requests to measure their CPU; ask for more")
    return {
        "requests": total,
        "concurrency": args.concurrency,
        "aiohttp_cpu_us": round(cpu["aiohttp"] * 1e6 / total, 1),
        "httpx_cpu_us": round(cpu["httpx"] * 1e6 / total, 1),
        "ratio": round(cpu["aiohttp"] / cpu["httpx"], 3),
        "aiohttp_rps": round(total / wall["aiohttp"], 1),
        "httpx_rps": round(total / wall["httpx"], 1),
    }


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.rounds < 1:
        print("bookingcache bench graph-client: counts must be at least 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bookingcache-graph-client-") as tmp:
        tls_dir = Path(tmp)
        argv_server = [
            sys.executable,
            "-m",
            "graph_emulator.page_server",
            "--tls-dir",
            str(tls_dir),
        ]
        try:
            with bench_server(argv_server, env=dict(os.environ)) as server:
                trusted = ssl.create_default_context(cafile=str(tls_dir / "cert.pem"))
                url = f"https://{server.host}:{server.port}{_PATH}"
                result = asyncio.run(_measure(url, trusted, args))
        except BenchError as exc:
            print(f"bookingcache bench graph-client: {exc}", file=sys.stderr)
            return 1
    report(result, as_json=args.json)
    return 0
