"""The ASGI app: ``uvicorn bookingcache_connector.app:create_app --factory``.

Plain ASGI, no web framework: the surface is five routes and a framework would be the largest
dependency an administrator has to audit. The relay's forwarding loop lives in the lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .bootstrap import Connector, build_connector
from .config import load_settings
from .web import Request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
MAX_BODY = 4 * 1024 * 1024


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
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
        built: Connector = holder["connector"]
        task = asyncio.create_task(built.relay.run()) if built.relay is not None else None
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        if task is not None:
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
        built: Connector | None = holder["connector"]
        if built is None:
            await _send(send, 503, b'{"detail": "not started"}', "application/json")
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
