"""``bookingcache bench hostile``: what hostile clients cost ``bookingcache serve``.

One service process (``--no-worker``, SQLite) on loopback, and over raw sockets:

1. ``/healthz`` latency on an idle server, one request after another;
2. ``--target-mib`` MiB request targets, sent by a client that reads while it sends, one
   connection after another for ``--seconds``, while ``/healthz`` is asked on another
   connection: how long each took to be refused (and with what), how many bytes went out
   before that, ``/healthz`` latency meanwhile, and the server's peak memory before and after;
3. ``--stalled`` connections that send half a request head and then nothing: ``/healthz``
   latency while they are open, and how long until the server had closed them all
   (``--header-timeout-s``, the service's ``BOOKINGCACHE_HTTP_HEADER_TIMEOUT_S``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bookingcache.settings import new_secrets_key
from bookingcache.tools.bench.http import BenchError, Server, percentile, server
from bookingcache.tools.processes import serve_command
from bookingcache.tools.rawhttp import (
    Flood,
    connect,
    flood,
    read_answer,
    read_until_closed,
    status_of,
)

MIB = 1024 * 1024
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"
HALF_HEAD = b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Never: "


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bookingcache bench hostile", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--target-mib", type=int, default=64, help="size of each request target")
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="how long the oversized targets keep coming"
    )
    parser.add_argument("--stalled", type=int, default=500, help="stalled connections")
    parser.add_argument(
        "--header-timeout-s", type=float, default=10.0, help="the service's header timeout"
    )
    return parser


class HealthProbe:
    """``/healthz`` asked one request after another on one kept-alive connection, in a thread;
    each answer's latency and when it came."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._stop = threading.Event()
        self.answers: list[tuple[float, float]] = []  # (when, latency in ms)
        self.failures: list[str] = []
        self._thread = threading.Thread(target=self._run, name="health probe", daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        sock: socket.socket | None = None
        try:
            while not self._stop.is_set():
                if sock is None:
                    sock = connect(self._port, timeout_s=30)
                started = time.perf_counter()
                sock.sendall(HEALTH)
                answer = read_answer(sock, timeout_s=30)
                if status_of(answer) != 200:
                    self.failures.append(f"/healthz answered {answer[:100]!r}")
                    return
                self.answers.append((time.monotonic(), (time.perf_counter() - started) * 1000))
                time.sleep(0.005)
        except OSError as exc:
            self.failures.append(f"/healthz: {exc}")
        finally:
            if sock is not None:
                sock.close()

    def latencies_between(self, start: float, end: float) -> list[float]:
        return [latency for at, latency in self.answers if start <= at <= end]


def _summary(latencies: Sequence[float]) -> dict[str, Any]:
    return {
        "answers": len(latencies),
        "p50_ms": round(percentile(latencies, 0.5), 2),
        "max_ms": round(max(latencies), 2) if latencies else None,
    }


def _idle_health(port: int, count: int = 50) -> list[float]:
    latencies = []
    with connect(port) as sock:
        for _ in range(count):
            started = time.perf_counter()
            sock.sendall(HEALTH)
            if status_of(read_answer(sock, timeout_s=30)) != 200:
                raise BenchError("/healthz did not answer 200")
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def _oversized_targets(running: Server, args: argparse.Namespace) -> dict[str, Any]:
    total = args.target_mib * MIB
    _, peak_before = running.rss_mb()
    floods: list[Flood] = []
    with HealthProbe(running.port) as probe:
        time.sleep(0.2)  # the probe has answered before the first target goes out
        started = time.monotonic()
        while not floods or time.monotonic() - started < args.seconds:
            with connect(running.port, timeout_s=30) as sock:
                floods.append(flood(sock, b"GET /", total=total))
        ended = time.monotonic()
    if probe.failures:
        raise BenchError(probe.failures[0])
    _, peak_after = running.rss_mb()
    refusals = [f.seconds * 1000 for f in floods]
    statuses = sorted({status_of(f.answer) or 0 for f in floods})
    return {
        "target_bytes": total,
        "attempts": len(floods),
        "statuses": statuses,
        "refused_all": statuses == [414],
        "time_to_answer_p50_ms": round(percentile(refusals, 0.5), 2),
        "time_to_answer_max_ms": round(max(refusals), 2),
        "max_bytes_sent_before_answer": max(f.sent for f in floods),
        "health_during": _summary(probe.latencies_between(started, ended)),
        "peak_rss_before_mb": peak_before,
        "peak_rss_after_mb": peak_after,
    }


def _stalled_connections(running: Server, args: argparse.Namespace) -> dict[str, Any]:
    stalled = []
    try:
        opened = time.monotonic()
        for _ in range(args.stalled):
            sock = connect(running.port, timeout_s=30)
            sock.sendall(HALF_HEAD)
            stalled.append(sock)
        during = _idle_health(running.port, count=20)
        closed_after = []
        answers = set()
        # Every connection should be closed by then; one deadline for them all.
        deadline = opened + args.header_timeout_s + 30
        for sock in stalled:
            remaining = max(0.01, deadline - time.monotonic())
            answer, closed = read_until_closed(sock, timeout_s=remaining)
            if closed:
                closed_after.append(time.monotonic() - opened)
            answers.add(status_of(answer) or 0)
    finally:
        for sock in stalled:
            sock.close()
    return {
        "connections": len(stalled),
        "closed": len(closed_after),
        "all_closed_after_s": round(max(closed_after), 2) if closed_after else None,
        "statuses": sorted(answers),
        "health_during": _summary(during),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as scratch:
        env = {
            **os.environ,
            "BOOKINGCACHE_ADMIN_TOKEN": secrets.token_urlsafe(32),
            "BOOKINGCACHE_SECRETS_KEY": new_secrets_key(),
            "BOOKINGCACHE_LOG_LEVEL": "WARNING",
            "BOOKINGCACHE_HTTP_HEADER_TIMEOUT_S": str(args.header_timeout_s),
        }
        command = serve_command(Path(scratch) / "data", "--no-worker")
        with server(command, env=env) as running:
            idle = _idle_health(running.port)
            targets = _oversized_targets(running, args)
            stalled = _stalled_connections(running, args)
    return {
        "health_idle": _summary(idle),
        "oversized_targets": targets,
        "stalled_heads": stalled,
        "header_timeout_s": args.header_timeout_s,
    }


def _print(result: dict[str, Any]) -> None:
    targets, stalled = result["oversized_targets"], result["stalled_heads"]
    mib = targets["target_bytes"] // MIB
    print(f"/healthz, idle server: {result['health_idle']}")
    print(
        f"{targets['attempts']} request targets of {mib} MiB: answered {targets['statuses']} "
        f"after p50 {targets['time_to_answer_p50_ms']} ms, max "
        f"{targets['time_to_answer_max_ms']} ms, at most "
        f"{targets['max_bytes_sent_before_answer']} bytes sent first"
    )
    print(f"  /healthz meanwhile: {targets['health_during']}")
    print(
        f"  server peak memory: {targets['peak_rss_before_mb']} MiB before, "
        f"{targets['peak_rss_after_mb']} MiB after"
    )
    print(
        f"{stalled['connections']} stalled request heads: {stalled['closed']} closed, the "
        f"last after {stalled['all_closed_after_s']} s (header timeout "
        f"{result['header_timeout_s']} s), answered {stalled['statuses']}"
    )
    print(f"  /healthz meanwhile: {stalled['health_during']}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = measure(args)
    except BenchError as exc:
        print(f"bookingcache bench hostile: {exc}")
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        _print(result)
    return 0
