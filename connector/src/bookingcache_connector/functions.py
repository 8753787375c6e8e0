"""Azure Functions (Python v2 programming model) on top of the same core.

``connector/function_app.py`` calls :func:`build_function_app`; the Functions host needs the
resulting ``app`` at module level, but nothing else is built at import: the connector (MSAL app,
HTTP clients, state file) is built on the first invocation and kept for the worker's lifetime.
Routes assume ``"routePrefix": ""`` in ``host.json`` so paths match the contract exactly.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from urllib.parse import urlsplit

import azure.functions as func

from .bootstrap import Connector, build_connector
from .config import load_settings
from .web import Request, Response, security_headers

log = logging.getLogger(__name__)

Provider = Callable[[], Connector]


def lazy_connector() -> Provider:
    holder: list[Connector] = []

    def get() -> Connector:
        if not holder:
            holder.append(build_connector(load_settings(os.environ)))
        return holder[0]

    return get


def to_request(req: func.HttpRequest) -> Request:
    parts = urlsplit(req.url)
    return Request(
        method=req.method,
        path=parts.path,
        query=parts.query,
        headers={k.lower(): v for k, v in req.headers.items()},
        body=req.get_body() or b"",
    )


def to_response(
    response: Response, request: Request | None = None, *, https: bool = False
) -> func.HttpResponse:
    """The Functions answer, with the security headers (``web.security_headers``): HSTS when
    the request came over https (the Functions front end terminates TLS and keeps the URL)."""
    headers = {"Content-Type": response.content_type}
    for name, value in security_headers(
        https=https, headers=request.headers if request is not None else {}
    ):
        headers.setdefault(name, value)
    return func.HttpResponse(
        body=response.body,
        status_code=response.status,
        mimetype=response.content_type.split(";")[0],
        charset="utf-8",
        headers=headers,
    )


def build_function_app(provider: Provider | None = None) -> func.FunctionApp:
    get = provider or lazy_connector()
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    background: set[asyncio.Task[object]] = set()

    async def drain(connector: Connector) -> None:
        """One drain of the relay; a failure is recorded and logged, never raised (the next
        notification or the minute's timer tries again)."""
        relay = connector.relay
        if relay is None:
            return
        try:
            await relay.drain()
        except Exception as exc:  # noqa: BLE001 - a background drain has no caller to tell
            relay.status.failed(exc, connector.clock.now())

    def forward_soon(connector: Connector) -> None:
        if connector.relay is None:
            return
        task: asyncio.Task[object] = asyncio.ensure_future(drain(connector))
        background.add(task)
        task.add_done_callback(background.discard)

    async def serve(req: func.HttpRequest) -> func.HttpResponse:
        connector = get()
        request = to_request(req)
        response = await connector.handlers.handle(request)
        if response.status == 202 and request.path.startswith("/graph/"):
            forward_soon(connector)  # the inbox is committed; Graph has its answer
        return to_response(response, request, https=urlsplit(req.url).scheme == "https")

    @app.function_name("healthz")
    @app.route(route="healthz", methods=["GET"])
    async def healthz(req: func.HttpRequest) -> func.HttpResponse:
        return await serve(req)

    @app.function_name("subscriptions")
    @app.route(route="v1/subscriptions", methods=["PUT", "PATCH"])
    async def subscriptions(req: func.HttpRequest) -> func.HttpResponse:
        return await serve(req)

    @app.function_name("calendar_events")
    @app.route(route="v1/calendars/{mailbox}/events", methods=["GET"])
    async def calendar_events(req: func.HttpRequest) -> func.HttpResponse:
        return await serve(req)

    @app.function_name("graph_notifications")
    @app.route(route="graph/notifications", methods=["POST"])
    async def graph_notifications(req: func.HttpRequest) -> func.HttpResponse:
        return await serve(req)

    @app.function_name("graph_lifecycle")
    @app.route(route="graph/lifecycle", methods=["POST"])
    async def graph_lifecycle(req: func.HttpRequest) -> func.HttpResponse:
        return await serve(req)

    @app.function_name("renew_subscriptions")
    @app.timer_trigger(schedule="0 17 */6 * * *", arg_name="timer", run_on_startup=False)
    async def renew_subscriptions(timer: func.TimerRequest) -> None:
        connector = get()
        status = connector.loops.get("renewal")
        try:
            rows = await connector.subscriptions.timer()
        except Exception as exc:  # noqa: BLE001 - the next timer tries again
            status.failed(exc, connector.clock.now())
            return
        failed = [r for r in rows if r["status"] == "failed"]
        log.info("renewal: %d subscriptions, %d failed", len(rows), len(failed))
        for r in failed:
            log.warning("renewal failed for %s: %s", r["mailbox"], r["error"])
        if not failed:
            status.succeeded(connector.clock.now())

    @app.function_name("relay_drain")
    @app.timer_trigger(schedule="0 */1 * * * *", arg_name="timer", run_on_startup=False)
    async def relay_drain(timer: func.TimerRequest) -> None:
        connector = get()
        relay = connector.relay
        if relay is not None:
            # Once a minute: a minute's worth of the reconciliation's pushes, then the backlog.
            try:
                relay.reconcile(budget=round(relay.reconcile_rate_per_s * 60))
            except Exception as exc:  # noqa: BLE001 - the next minute tries again
                relay.status.failed(exc, connector.clock.now())
            await drain(connector)

    return app
