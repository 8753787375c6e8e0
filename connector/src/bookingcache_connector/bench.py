"""Relay throughput: ``python -m bookingcache_connector.bench [--batches N]``.

Posts Graph-shaped batches (2 notifications each, distinct rooms) through the ASGI app in process
and reports the acknowledgement latency Graph would see (each 202 follows a durable SQLite
commit), then drains the inbox into an in-process receiver that verifies every signature.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from .app import create_app
from .bootstrap import build_connector
from .clock import SystemClock
from .config import Settings
from .signing import Verifier


class _NoTokens:
    async def token(self) -> str:
        raise RuntimeError("the benchmark never calls Graph")

    def invalidate(self, token: str) -> None:
        raise RuntimeError("the benchmark never calls Graph")


def _receiver(verifier: Verifier, counts: dict[str, int]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        verifier.verify(scope["method"], scope["path"], headers, body)
        counts["changes"] += len(json.loads(body)["changes"])
        counts["calls"] += 1
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


async def run(batches: int, rooms: int, directory: Path) -> dict[str, Any]:
    clock = SystemClock()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    counts = {"changes": 0, "calls": 0}
    settings = Settings(
        tenant_id="bench",
        client_id="bench",
        client_secret=secrets.token_hex(8),
        webhook_secret=secret,
        service_url="https://service.bench",
        service_tenant="bench",
        state_dir=directory,
        client_states=("bench-state",),
        renew_every_s=0,
    )
    receiver = _receiver(Verifier(secret, clock), counts)
    connector = build_connector(
        settings,
        clock=clock,
        tokens=_NoTokens(),
        service_transport=httpx.ASGITransport(app=receiver),
    )
    for i in range(rooms):
        connector.store.remember_subscription(f"sub-{i}", f"room-{i}@bench.example", "bench-state")
    app = create_app(connector)
    latencies: list[float] = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://relay.bench"
    ) as http:
        started = time.perf_counter()
        for n in range(batches):
            batch = {
                "value": [
                    {
                        "subscriptionId": f"sub-{(2 * n + k) % rooms}",
                        "clientState": "bench-state",
                        "changeType": "updated",
                        "tenantId": "bench",
                    }
                    for k in range(2)
                ]
            }
            t0 = time.perf_counter()
            response = await http.post("/graph/notifications", json=batch)
            latencies.append(time.perf_counter() - t0)
            assert response.status_code == 202
        intake_s = time.perf_counter() - started
    assert connector.relay is not None
    started = time.perf_counter()
    while await connector.relay.drain() is not None:
        pass
    drain_s = time.perf_counter() - started
    await connector.aclose()
    latencies.sort()
    return {
        "batches": batches,
        "ack_per_s": round(batches / intake_s),
        "ack_p50_ms": round(statistics.median(latencies) * 1000, 2),
        "ack_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "ack_max_ms": round(latencies[-1] * 1000, 2),
        "drained_notifications": 2 * batches,
        "service_calls": counts["calls"],
        "changes_delivered_after_dedup": counts["changes"],
        "drain_s": round(drain_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--rooms", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        print(json.dumps(asyncio.run(run(args.batches, args.rooms, Path(directory)))))


if __name__ == "__main__":
    main()
