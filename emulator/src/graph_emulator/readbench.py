"""Read throughput of the emulator over loopback HTTP: the ``graph-emulator`` command runs the
demo tenant in its own process while concurrent clients here page through calendarView (default
page size, following nextLink) across its rooms.

    python -m graph_emulator.readbench --seconds 10 --clients 8
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx


async def _client(
    base_url: str, token: str, rooms: list[str], window: dict[str, str], deadline: float
) -> list[float]:
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        index = 0
        while time.monotonic() < deadline:
            url: str | None = f"{base_url}/users/{rooms[index % len(rooms)]}/calendarView"
            params: dict[str, str] | None = window
            index += 1
            while url:
                started = time.monotonic()
                response = await client.get(url, params=params)
                latencies.append(time.monotonic() - started)
                response.raise_for_status()
                url, params = response.json().get("@odata.nextLink"), None
    return latencies


async def _run(base_url: str, token: str, rooms: list[str], clients: int, seconds: float) -> Any:
    now = dt.datetime.now(dt.UTC)
    monday = now.date() - dt.timedelta(days=now.weekday())
    window = {
        "startDateTime": f"{monday}T00:00:00Z",
        "endDateTime": f"{monday + dt.timedelta(days=7)}T00:00:00Z",
    }
    deadline = time.monotonic() + seconds
    # Each client reads different rooms, so no app + mailbox pair exceeds 4 in flight.
    parts = [rooms[n::clients] or rooms for n in range(clients)]
    results = await asyncio.gather(
        *(_client(base_url, token, part, window, deadline) for part in parts)
    )
    return [latency for result in results for latency in result]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m graph_emulator.readbench")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args(argv)
    process = subprocess.Popen(
        [sys.executable, "-m", "graph_emulator.cli", "--seed", "demo", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        info = json.loads(process.stdout.readline())
        token = httpx.post(
            info["authority"] + "/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": info["client_id"],
                "client_secret": info["client_secret"],
                "scope": "https://graph.microsoft.com/.default",
            },
        ).json()["access_token"]
        rooms = [m["upn"] for m in info["mailboxes"]]
        cpu_before = _cpu_seconds(process.pid)
        latencies = asyncio.run(_run(info["base_url"], token, rooms, args.clients, args.seconds))
        cpu_used = _cpu_seconds(process.pid) - cpu_before
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    ordered = sorted(latencies)
    print(
        json.dumps(
            {
                "requests": len(ordered),
                "requests_per_s": round(len(ordered) / args.seconds, 1),
                "p50_ms": round(statistics.median(ordered) * 1000, 2),
                "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2),
                "clients": args.clients,
                "rooms": len(rooms),
                # The machine is shared: the emulator's own CPU per request is the steadier figure.
                "server_cpu_ms_per_request": round(cpu_used / len(ordered) * 1000, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
