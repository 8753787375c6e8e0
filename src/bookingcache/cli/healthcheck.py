"""``bookingcache healthcheck``: exit 0 when this host's service (or worker) answers 200 on
its readiness path, else 1 with the reason on standard error. A container's health check runs
it inside the container, so it asks the loopback address, never the network."""

from __future__ import annotations

import sys

import httpx

from bookingcache.bootstrap import settings_from_environment

# A service bound to every address is asked on loopback.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104 (compared)


def run_healthcheck(*, port: int | None, worker: bool, path: str, timeout_s: float) -> int:
    """``port``, else the worker's metrics port (``worker``) or the API's port."""
    settings = settings_from_environment()
    if port is None and worker:
        if settings.metrics_port is None:
            print("bookingcache healthcheck: BOOKINGCACHE_METRICS_PORT is not set", file=sys.stderr)
            return 2
        port = settings.metrics_port
    host = _WILDCARDS.get(settings.host, settings.host)
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port if port is not None else settings.port}{path}"
    try:
        response = httpx.get(url, timeout=timeout_s, trust_env=False)
    except httpx.HTTPError as exc:
        print(f"bookingcache healthcheck: {url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        print(f"bookingcache healthcheck: {url}: {response.status_code}", file=sys.stderr)
        return 1
    return 0
