"""A request id on every request: the caller's ``X-Request-ID`` when it is sane, else a new one.
It comes back as a response header, and errors are logged with it so an operator can find the
log line of a failed call."""

from __future__ import annotations

import itertools
import os
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
SCOPE_KEY = "bookingcache.request_id"
_SANE = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def request_id_of(scope: Scope) -> str | None:
    value = scope.get(SCOPE_KEY)
    return value if isinstance(value, str) else None


class _Ids:
    """New ids: a random prefix per process and a counter, so they never repeat within a
    process and practically never across processes, without a system call per request."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(5).hex()
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):06x}"


_ids = _Ids()


def new_id() -> str:
    """A request id of this process's series (for an answer made before any scope exists)."""
    return _ids.next()


def assign(scope: Scope) -> str:
    """The request's id, kept in its scope: the caller's ``X-Request-ID`` when it is sane, else
    a new one."""
    given = next((value for name, value in scope["headers"] if name == HEADER), None)
    request_id = given.decode("ascii") if given and _SANE.fullmatch(given) else _ids.next()
    scope[SCOPE_KEY] = request_id
    return request_id


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        encoded = assign(scope).encode("ascii")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (HEADER, encoded)]
            await send(message)

        await self.app(scope, receive, send_with_id)
