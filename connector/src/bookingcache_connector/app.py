"""The ASGI app, served by ``bookingcache-connector serve`` (``server.py``: uvicorn with bounded
request heads and read timeouts); ``create_app`` is an ASGI app factory for any other server.

Plain ASGI, no web framework: the surface is five routes and a framework would be the largest
dependency an administrator has to audit. The relay's forwarding loop and the periodic renewal
live in the lifespan; ``GET /metrics`` serves the Prometheus metrics (``metrics.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .bootstrap import Connector, build_connector
from .config import load_settings
from .errors import ConnectorError
from .loops import backoff_s
from .metrics import age_s, render
from .web import Request, security_headers

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
MAX_BODY = 4 * 1024 * 1024
log = logging.getLogger(__name__)


def create_app(
    connector: Connector | None = None, *, build: Callable[[], Connector] | None = None
) -> ASGIApp:
    """Build the app around a ready ``connector``, or let the lifespan build one at start-up
    (with ``build``, or from the ``CONNECTOR_*`` settings) and close it at shut-down."""
    holder: dict[str, Any] = {"connector": connector}
    builder = build or (lambda: build_connector(load_settings(os.environ)))

    async def lifespan(receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        if holder["connector"] is None:
            try:
                holder["connector"] = builder()
                holder["owned"] = True
            except Exception as exc:  # noqa: BLE001 (the server reports it and stops)
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
        built: Connector = holder["connector"]
        tasks = []
        if built.relay is not None:
            tasks.append(asyncio.create_task(built.relay.run()))
        if built.settings.renew_every_s > 0:
            tasks.append(asyncio.create_task(renew_periodically(built)))
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if holder.get("owned"):
            await built.aclose()
        await send({"type": "lifespan.shutdown.complete"})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        send = _secured(scope, send)
        built: Connector | None = holder["connector"]
        if built is None:
            await _send(send, 503, b'{"detail": "not started"}', "application/json")
            return
        if scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD"):
            exposition, content_type = render(built.metrics, lambda: gauges(built))
            await _send(send, 200, exposition, content_type)
            return
        body = bytearray()
        while True:
            message = await receive()
            body.extend(message.get("body", b""))
            if len(body) > MAX_BODY:
                await _send(send, 413, b"", "text/plain")
                return
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        raw_path = scope.get("raw_path") or scope["path"].encode()
        request = Request(
            method=scope["method"],
            path=raw_path.decode("latin-1"),
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=bytes(body),
        )
        response = await built.handlers.handle(request)
        await _send(send, response.status, response.body, response.content_type)

    return app


# The renewal retries a failed pass after a backoff from RENEW_RETRY_BASE_S, at most
# RENEW_RETRY_CAP_S (and never later than the next regular pass).
RENEW_RETRY_BASE_S = 30.0
RENEW_RETRY_CAP_S = 900.0


async def renew_periodically(connector: Connector, *, rng: random.Random | None = None) -> None:
    """The container's counterpart of the Functions timer: re-converge the last desired set
    every ``renew_every_s``. A pass that raises, or leaves a subscription ``failed``, is a
    failure of the loop: logged, shown in ``/healthz``, and tried again after a backoff."""
    status = connector.loops.get("renewal")
    every = connector.settings.renew_every_s
    jitter = rng or random.Random()  # noqa: S311 - jitter, not secrets
    status.start()
    try:
        wait = every
        while True:
            await connector.clock.sleep(wait)
            wait = every
            try:
                rows = await connector.subscriptions.timer()
                failed = [r for r in rows if r["status"] == "failed"]
                for row in failed:
                    log.warning("renewal failed for %s: %s", row["mailbox"], row["error"])
                if failed:
                    raise RenewalIncomplete(f"{len(failed)} of {len(rows)} subscriptions failed")
            except Exception as exc:  # noqa: BLE001 - the loop outlives every failure
                cap = min(every, RENEW_RETRY_CAP_S)
                wait = backoff_s(
                    status.failures + 1, base_s=RENEW_RETRY_BASE_S, cap_s=cap, rng=jitter
                )
                status.failed(exc, connector.clock.now(), retry_in_s=wait)
            else:
                status.succeeded(connector.clock.now())
    finally:
        status.stop()


class RenewalIncomplete(ConnectorError):
    """A renewal pass that left subscriptions ``failed`` (each is logged with its reason)."""


def gauges(connector: Connector) -> dict[str, tuple[str, float | dict[str, float]]]:
    """The live values ``/metrics`` reads at each scrape."""
    statuses = connector.loops.statuses
    values: dict[str, tuple[str, float | dict[str, float]]] = {
        "loop_running": (
            "1 while a background loop's task runs.",
            {name: float(st.running) for name, st in statuses.items()},
        ),
        "loop_consecutive_failures": (
            "Failures in a row of each background loop (0 after a success).",
            {name: float(st.failures) for name, st in statuses.items()},
        ),
    }
    if connector.relay is not None:
        store = connector.store
        values["relay_backlog"] = (
            "Notifications received and not yet accepted by the service.",
            float(store.pending_count()),
        )
        values["relay_backlog_oldest_age_seconds"] = (
            "Age of the oldest notification in the backlog (0 when empty).",
            age_s(store.oldest_pending_at(), connector.clock.now()),
        )
        if connector.relay.reconciles:
            values["push_reconcile_bound_seconds"] = (
                "How long a room's pushed window may go unpushed now: the long bound while "
                "the subscriptions are listening, the short one otherwise.",
                connector.relay.reconcile_bound_s(connector.clock.now()),
            )
    return values


def _secured(scope: Scope, send: Send) -> Send:
    """``send`` adding the security headers (``web.security_headers``) to the answer. https is
    the scheme uvicorn reports: its own TLS, or a proxy it trusts (``FORWARDED_ALLOW_IPS``)
    saying ``X-Forwarded-Proto: https``."""
    names = [name.decode("latin-1") for name, _ in scope.get("headers", ())]
    extra = [
        (name.lower().encode(), value.encode())
        for name, value in security_headers(
            https=scope.get("scheme") == "https", headers=dict.fromkeys(names, "")
        )
    ]

    async def send_secured(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            present = {name.lower() for name, _ in headers}
            message["headers"] = headers + [(n, v) for n, v in extra if n not in present]
        await send(message)

    return send_secured


async def _send(send: Send, status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
