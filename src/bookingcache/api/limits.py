"""Request body limits, answered as problem+json 413 like every other error.

A body whose declared length is over the limit is refused before it is read; a body that
turns out longer than declared (or is chunked) is cut off as soon as it passes the limit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bookingcache.api.problems import problem_response


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        default_bytes: int,
        overrides: Sequence[tuple[str, int]] = (),
    ) -> None:
        """``overrides``: (path regex, limit) pairs for routes that take larger bodies."""
        self.app = app
        self.default_bytes = default_bytes
        self.overrides = [(re.compile(pattern), limit) for pattern, limit in overrides]

    def limit_for(self, path: str) -> int:
        for pattern, limit in self.overrides:
            if pattern.fullmatch(path):
                return limit
        return self.default_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        detail = f"the request body is over the limit of {limit} bytes"
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            request = Request(scope, receive)
            response = problem_response(request, 413, slug="payload-too-large", detail=detail)
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the endpoint's body read: the problem handlers answer it.
                    raise HTTPException(413, detail=detail)
            return message

        await self.app(scope, limited_receive, send)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
