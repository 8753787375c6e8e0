"""What the benchmarks measure with: one real service process on loopback, and a small
HTTP/1.1 load generator on raw keep-alive sockets (a full client such as httpx spends more CPU
per request than the server under test, and would measure itself)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bookingcache.errors import BookingCacheError
from bookingcache.tools import processes
from bookingcache.tools.processes import Child


class BenchError(BookingCacheError):
    """The benchmark could not run (the server did not start, a request failed)."""


@dataclass(frozen=True, slots=True)
class Server:
    child: Child
    host: str
    port: int

    @property
    def pid(self) -> int:
        return self.child.pid

    def cpu_s(self) -> float:
        """User plus system CPU seconds the server process has used so far."""
        return cpu_s(self.pid)

    def rss_mb(self) -> tuple[float, float]:
        """(current, peak) resident memory of the server process in MiB, from /proc."""
        return rss_mb(self.pid)


def cpu_s(pid: int) -> float:
    """User plus system CPU seconds process ``pid`` has used so far, from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of process ``pid`` in MiB, from /proc."""
    fields: dict[str, float] = {}
    status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return round(fields["VmRSS"], 1), round(fields["VmHWM"], 1)


@contextlib.contextmanager
def server(
    argv: Sequence[str], *, env: Mapping[str, str], start_timeout_s: float = 60.0
) -> Iterator[Server]:
    """A server command (``bookingcache serve`` or the baseline) on a free loopback port, once
    it listens; stopped with SIGTERM afterwards unless it was killed already."""
    try:
        with processes.running(argv, env=env, timeout_s=start_timeout_s) as child:
            match = processes.LISTENING.search(child.banner)
            assert match is not None
            yield Server(child, match["host"], int(match["port"]))
    except processes.NotAnswering as exc:
        raise BenchError(str(exc)) from exc


@contextlib.contextmanager
def running_server(
    *,
    secrets_key: str,
    data_dir: Path,
    database_url: str,
    admin_token: str,
    worker: bool = True,
    start_timeout_s: float = 60.0,
) -> Iterator[Server]:
    """``bookingcache serve`` on a free loopback port, stopped (SIGTERM) afterwards;
    ``worker=False`` starts an API-only process (``--no-worker``)."""
    env = {
        **os.environ,
        "BOOKINGCACHE_ADMIN_TOKEN": admin_token,
        "BOOKINGCACHE_SECRETS_KEY": secrets_key,
        "BOOKINGCACHE_LOG_LEVEL": "WARNING",
    }
    command = processes.serve_command(
        data_dir, "--database-url", database_url, *([] if worker else ["--no-worker"])
    )
    with server(command, env=env, start_timeout_s=start_timeout_s) as running:
        yield running


def request_bytes(
    method: str, path: str, *, headers: Mapping[str, str], body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: bench"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method != "GET":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


class Connection:
    """One keep-alive HTTP/1.1 connection answering one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port, limit=2**24)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send one request; (status, body) of its response (Content-Length framed)."""
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self._reader.readexactly(length) if length else b""
        return status, body

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


async def timed_requests(
    server: Server, requests: Sequence[bytes], *, expect: int = 200
) -> tuple[list[float], int]:
    """Send the requests one after another on one connection; (latencies in ms, body bytes of
    the last answer)."""
    connection = await Connection.open(server.host, server.port)
    latencies: list[float] = []
    size = 0
    try:
        for request in requests:
            started = time.perf_counter()
            status, body = await connection.exchange(request)
            latencies.append((time.perf_counter() - started) * 1000)
            if status != expect:
                raise BenchError(f"answer {status}: {body[:300]!r}")
            size = len(body)
    finally:
        await connection.close()
    return latencies, size


async def throughput(
    server: Server, requests: Sequence[bytes], *, concurrency: int, seconds: float
) -> tuple[int, float, list[float]]:
    """Keep ``concurrency`` connections busy for ``seconds``, cycling through ``requests``;
    (answers, elapsed seconds, latencies in ms)."""
    connections = [await Connection.open(server.host, server.port) for _ in range(concurrency)]
    latencies: list[float] = []
    failures: list[str] = []
    deadline = time.perf_counter() + seconds

    async def work(index: int, connection: Connection) -> None:
        position = index
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            status, body = await connection.exchange(requests[position % len(requests)])
            latencies.append((time.perf_counter() - started) * 1000)
            if status != 200:
                failures.append(f"answer {status}: {body[:300]!r}")
                return
            position += concurrency

    began = time.perf_counter()
    try:
        await asyncio.gather(*(work(i, c) for i, c in enumerate(connections)))
    finally:
        elapsed = time.perf_counter() - began
        for connection in connections:
            await connection.close()
    if failures:
        raise BenchError(failures[0])
    return len(latencies), elapsed, latencies


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in 0..1)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


async def paced(rate: float, duration: float) -> AsyncIterator[int]:
    """The numbers of ``rate * duration`` steps, each yielded at its instant of a steady rate
    (a step that falls behind is yielded at once: the schedule does not drift)."""
    interval = 1 / rate
    began = time.perf_counter()
    for number in range(int(rate * duration)):
        delay = began + number * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        yield number


def report(result: Mapping[str, Any], *, as_json: bool) -> None:
    """A benchmark's result: one JSON line, or one aligned ``name: value`` line per figure."""
    if as_json:
        print(json.dumps(result))
        return
    width = max((len(name) for name in result), default=0)
    for name, value in result.items():
        print(f"{name:>{width}}: {value}")
