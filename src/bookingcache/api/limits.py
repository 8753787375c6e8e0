"""Request body limits, answered as problem+json like every other error: one implementation for
the middleware in front of the routes and for Graph's webhook, which is answered before them.

A body whose declared length is over the limit is refused (413) before it is read, and a
``Content-Length`` that is not a number is a 400; a body that turns out longer than declared
(or is chunked) is cut off (413) as soon as it passes the limit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bookingcache.api.problems import ProblemError, problem_of, response_of
from bookingcache.errors import BodyTooLarge


class BodyLimits:
    def __init__(self, *, default_bytes: int, overrides: Sequence[tuple[str, int]] = ()) -> None:
        """``overrides``: (path regex, limit) pairs for routes that take larger bodies."""
        self.default_bytes = default_bytes
        self.overrides = [(re.compile(pattern), limit) for pattern, limit in overrides]

    def limit_for(self, path: str) -> int:
        for pattern, limit in self.overrides:
            if pattern.fullmatch(path):
                return limit
        return self.default_bytes


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"the request body is over the limit of {limit} bytes")


def check_declared(scope: Scope, limit: int) -> None:
    """Refuse a request whose declared length is over ``limit`` (``BodyTooLarge``) or is not a
    number (a 400 ``ProblemError``)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit():
                raise ProblemError(400, "bad-request", "Content-Length is not a number")
            if int(value) > limit:
                raise _too_large(limit)
            return


def limited(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises ``BodyTooLarge`` as soon as the body read passes ``limit``."""
    received = 0

    async def limited_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _too_large(limit)
        return message

    return limited_receive


async def read_body(receive: Receive) -> bytes:
    """The whole body of a request whose body is still unread."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.limit_for(scope["path"])
        try:
            check_declared(scope, limit)
        except (ProblemError, BodyTooLarge) as exc:
            # In front of the routes: their problem handlers are not there yet to answer.
            problem = exc if isinstance(exc, ProblemError) else problem_of(exc)
            await response_of(Request(scope), problem)(scope, receive, send)
            return
        read = limited(receive, limit)

        async def limited_receive() -> Message:
            try:
                return await read()
            except BodyTooLarge as exc:
                # Raised inside the endpoint's body read, where FastAPI lets only its own
                # HTTP errors through; the problem handlers answer it as 413 all the same.
                raise HTTPException(413, detail=str(exc)) from exc

        await self.app(scope, limited_receive, send)
