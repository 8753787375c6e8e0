"""The HTTP/1.1 server under the API: uvicorn's httptools protocol with bounded request heads and
read timeouts, and the ``uvicorn.Config`` every server of the service is started with.

uvicorn as such reads a request head without limit (httptools gathers the request target and
each header in memory, at a cost that grows with the square of its length) and without a
deadline (a client that sends a head a byte at a time, or never finishes it, keeps its
connection for ever). ``BoundedHttpToolsProtocol`` counts the bytes of each head as they arrive
and feeds the parser at most one byte over the limit, so nothing over it is gathered:

- a request target (path and query) over ``max_target_bytes``: 414;
- a head (request line and header fields) over ``max_head_bytes``, or more than
  ``max_headers`` header fields: 431;
- a head that is not complete ``header_timeout_s`` after the connection was opened, or after
  its first byte on a kept-alive connection: 408 (a connection that sent nothing is closed);
- a body that has sent nothing for ``body_timeout_s`` while the server was reading it: 408.

Each refusal is a short ``application/problem+json`` answer with ``Connection: close``; the
server then stops sending, reads and discards what the client still sends for a moment (so
that the client reads the answer rather than a reset) and closes. Idle kept-alive connections
are closed after ``keep_alive_s`` (uvicorn's ``timeout_keep_alive``).

A request whose head and body arrive in one read, which is every usual request, arms no timer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bookingcache.api.problems import PROBLEM_JSON, TYPE_PREFIX, registered
from bookingcache.api.request_id import new_id
from bookingcache.api.security_headers import ALWAYS
from bookingcache.settings import Settings

log = logging.getLogger(__name__)

# After a refusal: how long, and how many bytes, the server reads and discards before it closes.
LINGER_S = 2.0
LINGER_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_target_bytes: int = 8 * 1024
    max_head_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: float = 5.0

    @classmethod
    def of(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_target_bytes=settings.http_max_target_bytes,
            max_head_bytes=settings.http_max_head_bytes,
            max_headers=settings.http_max_headers,
            header_timeout_s=settings.http_header_timeout_s,
            body_timeout_s=settings.http_body_timeout_s,
            keep_alive_s=settings.http_keep_alive_s,
        )


# RFC 9110's reason phrases (Python's own differ between versions).
_PHRASES = {408: "Request Timeout", 414: "URI Too Long", 431: "Request Header Fields Too Large"}


def refusal_bytes(status: int, slug: str, detail: str, *, request_id: str) -> bytes:
    """A complete HTTP/1.1 answer: a problem+json body with the request id and the security
    headers every answer has, and the connection closes."""
    phrase = _PHRASES.get(status) or HTTPStatus(status).phrase
    body = json.dumps(
        {"type": TYPE_PREFIX + slug, "title": phrase, "status": status, "detail": detail},
        separators=(",", ":"),
    ).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        f"content-type: {PROBLEM_JSON}\r\n"
        f"content-length: {len(body)}\r\n"
        f"x-request-id: {request_id}\r\n"
        "connection: close\r\n"
    ).encode("ascii")
    secured = b"".join(name + b": " + value + b"\r\n" for name, value in ALWAYS)
    return head + secured + b"\r\n" + body


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request refused below the API: its status, problem type (one of ``PROBLEM_TYPES``)
    and detail."""

    status: int
    slug: str
    detail: str

    def __post_init__(self) -> None:
        registered(self.status, self.slug)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with ``limits`` on each request head and read timeouts.

    A request is read in two phases: its head (``_in_head``: from the end of the previous
    request, or the connection, to the end of the header fields) and its body. Bytes of a
    head are counted before the parser sees them; the parser's callbacks count the bytes of the
    target as they come, and the header fields once the head is complete."""

    limits: ClassVar[HttpLimits] = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._target_bytes = 0
        # (status, slug, detail) once the request in hand is refused.
        self._refusal: Refusal | None = None
        # After a refusal nothing more is parsed: what arrives is discarded.
        self._discarding = False
        self._discarded = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._body_seen_at = 0.0

    # --- connection ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # The first head must be complete within the timeout of the connection.
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._body_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._linger_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            self._discard(len(data))
            return
        if self._in_head and self._head_bytes + len(data) <= self.limits.max_head_bytes:
            # The usual read: within what is left of the head's limit.
            self._head_bytes += len(data)
            super().data_received(data)
        elif not self._feed_bounded(data):
            return
        if self._refusal is not None:
            self._refuse()
        elif self._head_bytes or not self._in_head:
            self._time_reading()

    def _feed_bounded(self, data: bytes) -> bool:
        """Feed ``data`` in pieces, the parser getting at most one byte over the limit of the
        head being read; False if the request was refused or the connection is closing."""
        limit = self.limits.max_head_bytes
        while data and self._in_head:
            room = limit - self._head_bytes + 1
            piece, data = (data, b"") if len(data) <= room else (data[:room], data[room:])
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self._refusal is None and self._in_head and self._head_bytes > limit:
                self._refusal = Refusal(
                    431,
                    "header-fields-too-large",
                    f"the request head is over the limit of {limit} bytes",
                )
            if self._refusal is not None:
                self._refuse()
                return False
            if self.transport.is_closing():
                return False
        if data:
            super().data_received(data)
        return True

    def _time_reading(self) -> None:
        """A head or a body is being read: its timer runs."""
        if self.transport.is_closing():
            return
        if self._in_head:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(
                    self.limits.header_timeout_s, self._head_timed_out
                )
            return
        self._body_seen_at = self.loop.time()
        if self._body_timer is None:
            self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_check)

    # --- parser callbacks ---------------------------------------------------------------------
    def on_url(self, url: bytes) -> None:
        if self._refusal is not None:
            return
        self._target_bytes += len(url)
        if self._target_bytes > self.limits.max_target_bytes:
            self._refusal = Refusal(
                414,
                "uri-too-long",
                f"the request target is over the limit of {self.limits.max_target_bytes} bytes",
            )
            return
        super().on_url(url)

    def on_headers_complete(self) -> None:
        # The header fields are counted here, not one by one: their bytes are bounded already.
        if self._refusal is None and len(self.headers) > self.limits.max_headers:
            self._refusal = Refusal(
                431,
                "header-fields-too-large",
                f"the request has more than {self.limits.max_headers} header fields",
            )
        if self._refusal is not None:
            return
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refusal is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refusal is not None:
            return
        self._in_head = True
        self._head_bytes = self._target_bytes = 0
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # --- timeouts -----------------------------------------------------------------------------
    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self._discarding or self.transport.is_closing():
            return
        if self._response_pending():
            # A pipelined head stalls behind an answer still being made: close after it.
            self.cycle.keep_alive = False
            self._discarding = True
            return
        if self._head_bytes == 0:
            self.transport.close()  # nothing was asked
            return
        self._refusal = Refusal(
            408,
            "request-timeout",
            f"the request head did not arrive within {self.limits.header_timeout_s:g} s",
        )
        self._refuse()

    def _body_check(self) -> None:
        self._body_timer = None
        if self._in_head or self._discarding or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:
            # The application is not reading the body: not the client's delay.
            self._body_seen_at = now
        idle = now - self._body_seen_at
        if idle < self.limits.body_timeout_s:
            self._body_timer = self.loop.call_later(
                self.limits.body_timeout_s - idle, self._body_check
            )
            return
        cycle = self.cycle
        answered = cycle.response_started
        if not cycle.response_complete:
            # The application hears that the client is gone, and answers nothing more.
            cycle.disconnected = True
            cycle.message_event.set()
        if answered:
            self._discarding = True
            self.transport.close()
            return
        self._refusal = Refusal(
            408,
            "request-timeout",
            f"the request body sent nothing for {self.limits.body_timeout_s:g} s",
        )
        self._refuse()

    # --- refusing -----------------------------------------------------------------------------
    def _response_pending(self) -> bool:
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete and not cycle.disconnected

    def _refuse(self) -> None:
        assert self._refusal is not None
        status, slug, detail = self._refusal.status, self._refusal.slug, self._refusal.detail
        self._discarding = True
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        request_id = new_id()
        log.info(
            "refused a request from %s: %s (%d, request %s)",
            _peer(self.client),
            detail,
            status,
            request_id,
            extra={"request_id": request_id},
        )
        if self._response_pending():
            # A pipelined request behind an answer still being made: close after that answer.
            self.cycle.keep_alive = False
            return
        self.transport.write(refusal_bytes(status, slug, detail, request_id=request_id))
        # Stop sending, but read on for a moment: a close with unread data would reset the
        # connection, and the client could lose the answer.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()
        self._linger_timer = self.loop.call_later(LINGER_S, self.transport.close)

    def _discard(self, size: int) -> None:
        self._discarded += size
        if self._discarded > LINGER_MAX_BYTES and not self.transport.is_closing():
            self.transport.abort()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "an unknown peer"


def bounded_protocol(limits: HttpLimits) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for a server with these ``limits``."""

    class Bounded(BoundedHttpToolsProtocol):
        pass

    Bounded.limits = limits
    return Bounded


def server_config(app: Any, settings: Settings, **options: Any) -> uvicorn.Config:
    """The ``uvicorn.Config`` of a server of the service: the bounded httptools protocol with
    ``settings``' limits, no WebSocket upgrade (the API has none), no access log or ``Server``
    header, no forwarded headers believed; ``options`` add to it."""
    limits = HttpLimits.of(settings)
    return uvicorn.Config(
        app,
        http=bounded_protocol(limits),
        ws="none",
        timeout_keep_alive=limits.keep_alive_s,  # type: ignore[arg-type]
        log_config=None,
        access_log=False,
        server_header=False,
        # The client address is the socket peer, and X-Forwarded-* count only as far as
        # ``trusted_proxy_hops`` says (api.forwarded), not because the peer is on loopback.
        proxy_headers=False,
        **options,
    )
