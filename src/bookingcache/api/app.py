"""The ASGI application factory. Nothing is built at import time: ``create_app`` returns an app
whose lifespan opens the process's services with the factory it is given (the composition
root's ``bootstrap.open_service``) and closes them at the end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from bookingcache.api import (
    audit,
    availability,
    credentials,
    docs_pages,
    events,
    fast_reads,
    health,
    intake,
    map_client,
    page,
    rooms,
    schedule,
    stream,
    stream_writer,
    subscriptions,
    tenants,
)
from bookingcache.api.deps import Services
from bookingcache.api.limits import BodyLimitMiddleware, BodyLimits
from bookingcache.api.metrics import HttpMetrics, MetricsMiddleware
from bookingcache.api.problems import PROBLEM_JSON, Problem, install_problem_handlers
from bookingcache.api.query import check_query
from bookingcache.api.request_id import RequestIdMiddleware
from bookingcache.api.security_headers import with_security_headers
from bookingcache.api.throttle import AuthThrottle, ThrottleMetrics
from bookingcache.settings import Settings

# Opens the process's services, registering their metrics in the app's registry.
ServicesFactory = Callable[[CollectorRegistry], Awaitable[Services]]

# Request bodies are small JSON documents; the room import is allowed more (see create_app).
MAX_BODY_BYTES = 1024 * 1024

_DESCRIPTION = """\
Meeting-room availability for indoor maps, answered from a cache kept fresh by Microsoft 365
change notifications.

Management calls (tenants, rooms) need the admin token; availability calls need the tenant's read
token or the admin token; both as `Authorization: Bearer <token>`. Failed authentication is
throttled per client address and per tenant named by the token: over budget, a wrong token is
answered 429 `too-many-failed-attempts` with `Retry-After`; a valid token is never refused.
Every error is an RFC 9457 `application/problem+json` body.

The server bounds each request before it reaches these routes (by default; docs/api.md,
"Limits"): a request target over 8 KiB is answered 414, a request head over 64 KiB or with more
than 100 header fields 431, a head not complete within 10 s or a body silent for 30 s 408; each
of these closes the connection.
"""


class ServiceApp(FastAPI):
    """The service's FastAPI app, with Graph's webhook POSTs and the connector relay's calls
    answered before the middleware stack and the router (see ``intake.BareExchange``, which
    does what those layers would do for these requests). Every HTTP answer, from either way
    in and the outermost error handler's 500 too, gets the security headers
    (``security_headers``)."""

    # Set by ``create_app`` from the settings: how many proxies' X-Forwarded-* entries count.
    trusted_proxy_hops = 0
    # Set by ``create_app``: the single-room read's way around the routing (``fast_reads``);
    # None sends every request through the stack.
    room_availability_read: fast_reads.RoomAvailabilityRead | None = None
    # Whether the connector relay's calls are answered before the stack (``intake.RelayEndpoint``).
    relay_fast_path = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            send = with_security_headers(scope, send, trusted_proxy_hops=self.trusted_proxy_hops)
            # The change stream's body is written here, past the layers that only add headers.
            scope[stream_writer.RAW_SEND] = send
        fast = self.room_availability_read
        if scope["type"] == "http" and scope["method"] == "GET" and fast is not None:
            match = fast_reads.PATH.fullmatch(scope["path"])
            if match is not None and await fast(scope, send, *match.groups()):
                return
        elif scope["type"] == "http" and scope["method"] == "POST":
            match = intake.WEBHOOK_PATH.fullmatch(scope["path"])
            if match is not None:
                scope["app"] = self
                await intake.GraphWebhook(self, kind=match[1], tenant=match[2])(
                    scope, receive, send
                )
                return
            match = intake.RELAY_PATH.fullmatch(scope["path"])
            if match is not None and self.relay_fast_path and intake.RelayEndpoint.takes(scope):
                scope["app"] = self
                await intake.RelayEndpoint(self, tenant=match[1])(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The app under the CORS policy kept for ``fast_reads``, which uses only its headers."""
    raise RuntimeError("the fast path's CORS policy is not an app")


def create_app(settings: Settings, *, services: ServicesFactory) -> FastAPI:
    """The service's app over the services ``services(registry)`` opens when it starts."""
    registry = CollectorRegistry()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = await services(registry)
        app.state.services = opened
        try:
            yield
        finally:
            app.state.services = None
            await opened.close()

    app = ServiceApp(
        title="bookingcache",
        version=version("bookingcache"),
        description=_DESCRIPTION,
        lifespan=lifespan,
        # Served by docs_pages, with a Content-Security-Policy that lets them work.
        docs_url=None,
        redoc_url=None,
        # The service's own metrics are Prometheus (GET /metrics); FastAPI's OpenTelemetry
        # hooks would cost every request a look at the global providers for nothing.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        dependencies=[Depends(check_query)],
    )
    http_metrics = HttpMetrics(registry)
    body_limits = BodyLimits(
        default_bytes=MAX_BODY_BYTES,
        overrides=[(r"/v1/tenants/[^/]+/rooms:import", rooms.MAX_IMPORT_BYTES)],
    )
    app.state.services = None
    app.state.metrics_registry = registry
    app.state.http_metrics = http_metrics
    app.state.body_limits = body_limits
    app.state.auth_throttle = AuthThrottle(settings, ThrottleMetrics.of(registry))
    app.state.stream_writer = stream_writer.StreamWriter(heartbeat_s=settings.stream_heartbeat_s)
    app.trusted_proxy_hops = settings.trusted_proxy_hops
    app.add_middleware(BodyLimitMiddleware, limits=body_limits)
    cors: CORSMiddleware | None = None
    if settings.cors_origins:
        cors_options: dict[str, Any] = {
            "allow_origins": settings.cors_origins,
            "allow_methods": ["GET", "POST", "PUT", "PATCH", "DELETE"],
            "allow_headers": ["Authorization", "Content-Type", "X-Request-ID"],
            "expose_headers": ["X-Request-ID", "Location"],
            "max_age": 600,
        }
        app.add_middleware(CORSMiddleware, **cors_options)
        # The same policy for the answers of the single-room fast path.
        cors = CORSMiddleware(_no_app, **cors_options)
    app.room_availability_read = fast_reads.RoomAvailabilityRead(app, cors=cors)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=http_metrics)
    install_problem_handlers(app)
    app.include_router(health.router)
    app.include_router(docs_pages.router)
    app.include_router(page.router)
    app.include_router(tenants.router)
    app.include_router(rooms.router)
    app.include_router(availability.router)
    app.include_router(map_client.router)
    app.include_router(schedule.router)
    app.include_router(events.router)
    app.include_router(stream.router)
    app.include_router(intake.router)
    app.include_router(subscriptions.router)
    app.include_router(credentials.router)
    app.include_router(audit.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = problems_in_openapi(schema)
            schemes = app.openapi_schema["components"].setdefault("securitySchemes", {})
            schemes["StreamTicket"] = stream.TICKET_SCHEME
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def too_many_failed_attempts() -> dict[str, Any]:
    """The OpenAPI response of a failed authentication over its budget."""
    return {
        "description": "Too many failed attempts from this address or for this tenant: a wrong "
        "token or signature is refused with this instead of 401 until Retry-After has passed "
        "(a valid one is never refused)",
        "headers": {
            "Retry-After": {
                "description": "Whole seconds until a failed attempt is answered 401 again",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    }


def problems_in_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Describe every error answer as what it is, a problem+json body, and document the 400 of
    every operation (a Content-Length that is no number, or a body that cannot be parsed) and
    the 401/403/503 of every operation that takes a token (and so reads the store)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in problem_schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components.setdefault("Problem", problem_schema)
    for name, definition in [
        *rooms.openapi_components().items(),
        *intake.openapi_components().items(),
        *stream.openapi_components().items(),
    ]:
        components.setdefault(name, definition)
    problem = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses: dict[str, Any] = operation["responses"]
            if "requestBody" in operation:
                responses.setdefault("400", {"description": "The body could not be parsed"})
            else:
                # Any request may declare a body length (api/limits): one that is no number is
                # refused before the route, whatever the operation.
                responses.setdefault(
                    "400", {"description": "The request's Content-Length is not a number"}
                )
            if operation.get("security"):
                responses.setdefault("401", {"description": "Missing or wrong token"})
                responses.setdefault("403", {"description": "The token may not do this"})
                responses.setdefault("429", {})
            if "429" in responses:
                responses["429"].update(too_many_failed_attempts())
                responses.setdefault("503", {"description": "The database is unavailable"})
            for code, response in responses.items():
                if code.isdigit() and int(code) >= 400:
                    response["content"] = dict(problem)
                    if response.get("description") == "Validation Error":
                        response["description"] = "The request is invalid"
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema
