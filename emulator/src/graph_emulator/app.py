"""The emulator's ASGI app: Graph routes under ``/v1.0``, the identity endpoints, and the routes
of the installed extensions (subscriptions and delivery, the control API)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from graph_emulator import (
    auth,
    batch,
    control,
    routes_calendar,
    routes_delta,
    routes_directory,
    routes_events,
    schedule,
    subscriptions,
)
from graph_emulator.errors import REQUEST_IDS, GraphError
from graph_emulator.state import EmulatorState

log = logging.getLogger(__name__)

# Graph matches path segments case-insensitively ("Users/{id}/Events/{id}" in notifications).
_SEGMENTS = {
    s.lower(): s
    for s in (
        "users",
        "events",
        "calendar",
        "calendarView",
        "delta",
        "getSchedule",
        "places",
        "microsoft.graph.room",
        "subscriptions",
        "reauthorize",
        "instances",
    )
}


def _request_ids(scope: Scope) -> tuple[str, str]:
    """A fresh ``request-id``, and the caller's ``client-request-id`` if it sent a usable one
    (Graph echoes it), else the same id."""
    request_id = str(uuid.uuid4())
    for key, value in scope.get("headers", []):
        if key == b"client-request-id":
            text = value.decode("latin-1").strip()
            if 0 < len(text) <= 128 and text.isprintable():
                return request_id, text
    return request_id, request_id


def _with_request_ids(message: Message, ids: tuple[str, str]) -> Message:
    headers = [
        (k, v)
        for k, v in message.get("headers", [])
        if k.lower() not in (b"request-id", b"client-request-id")
    ]
    headers += [(b"request-id", ids[0].encode()), (b"client-request-id", ids[1].encode())]
    return {**message, "headers": headers}


class GraphErrors:
    """Answers GraphError with its body and anything unexpected with a Graph-style 500, so no
    request can crash the process or leak a traceback; canonicalizes path segment case; and
    gives every Graph answer Graph's ``request-id`` and ``client-request-id`` headers."""

    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ids: tuple[str, str] | None = None
        if scope["path"].lower().startswith("/v1.0/"):
            parts = scope["path"].split("/")
            parts = [_SEGMENTS.get(p.lower(), p) for p in parts]
            scope = dict(scope, path="/".join(parts))
            ids = _request_ids(scope)
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if ids is not None:
                    message = _with_request_ids(message, ids)
            await send(message)

        reset = REQUEST_IDS.set(ids) if ids is not None else None
        try:
            await self.app(scope, receive, tracking_send)
        except GraphError as error:
            if not started:
                await error.to_response(now=self.state.clock.now())(scope, receive, send)
        except Exception:
            log.exception("unhandled error answering %s %s", scope["method"], scope["path"])
            if not started:
                failure = GraphError(
                    500, "generalException", "An unexpected error occurred in the emulator."
                )
                await failure.to_response(now=self.state.clock.now())(scope, receive, send)
        finally:
            if reset is not None:
                REQUEST_IDS.reset(reset)


def create_app(state: EmulatorState) -> Starlette:
    extensions = [subscriptions.install(state), control.install(state)]
    holder: list[ASGIApp] = []
    own: list[BaseRoute] = [
        *auth.routes(state),
        *routes_directory.routes(state),
        *routes_calendar.routes(state),
        *routes_delta.routes(state),
        *routes_events.routes(state),
        *schedule.routes(state),
        *batch.routes(state, lambda: holder[0]),
    ]
    for extension in extensions:
        own.extend(extension.routes)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started = []
        try:
            for extension in extensions:
                if extension.startup is not None:
                    await extension.startup()
                started.append(extension)
            yield
        finally:
            for extension in reversed(started):
                if extension.shutdown is not None:
                    await extension.shutdown()

    async def graph_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GraphError)
        return exc.to_response(now=state.clock.now())

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            segment = request.url.path.rstrip("/").rsplit("/", 1)[-1]
            message = f"Resource not found for the segment '{segment}'."
            error = GraphError(400, "BadRequest", message)
        elif exc.status_code == 405:
            error = GraphError(
                405, "BadRequest", f"The HTTP method '{request.method}' is not supported."
            )
        else:
            error = GraphError(exc.status_code, "BadRequest", str(exc.detail))
        return error.to_response(now=state.clock.now())

    handlers: dict[Any, Any] = {GraphError: graph_error, HTTPException: http_error}
    app = Starlette(routes=own, lifespan=lifespan, exception_handlers=handlers)
    app.add_middleware(GraphErrors, state=state)
    holder.append(app)
    app.state.emulator = state
    return app
