"""``bookingcache healthcheck``: exit 0 when the service (or a worker's metrics port) at
``host:port`` answers 200 on its readiness path, else 1 with the reason on standard error.

A container's health check runs it every few seconds inside the container, so it imports
nothing of the service and reads no settings: the image's health check passes the port
(``--port "$BOOKINGCACHE_PORT"``, expanded by the container's shell)."""

from __future__ import annotations

import sys

import httpx


def run_healthcheck(*, host: str, port: int, path: str, timeout_s: float) -> int:
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}{path}"
    try:
        response = httpx.get(url, timeout=timeout_s, trust_env=False)
    except httpx.HTTPError as exc:
        print(f"bookingcache healthcheck: {url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        print(f"bookingcache healthcheck: {url}: {response.status_code}", file=sys.stderr)
        return 1
    return 0
