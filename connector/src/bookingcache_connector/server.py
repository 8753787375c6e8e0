"""``bookingcache-connector serve``: the ASGI app on uvicorn, with bounded request heads and
read timeouts (``serve``).

uvicorn as such reads a request head without a deadline (a client that sends a head a byte at a
time, or never finishes it, keeps its connection for ever), and with its httptools parser
without a size limit either. This server uses uvicorn's h11 protocol, which is pure Python and
always installed with uvicorn (the connector's load is a few requests a second), with:

- a request line over ``max_request_line_bytes``: 414, before the parser sees it;
- a head (request line and header fields) over ``max_head_bytes``, or with more than
  ``max_headers`` header fields: 431;
- a head that is not complete ``header_timeout_s`` after the connection was opened, or after
  its first byte on a kept-alive connection: 408 (a connection that sent nothing is closed);
- a body that sends nothing for ``body_timeout_s`` while it is read: 408;
- an idle kept-alive connection closed after ``keep_alive_s``.

Each refusal is a short ``application/problem+json`` answer; the server then stops sending,
reads and discards what still comes for a moment (so the client reads the answer, not a reset),
and closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from dataclasses import dataclass
from types import FrameType
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .config import Settings
from .web import SECURITY_HEADERS

log = logging.getLogger(__name__)

# After a refusal: how long, and how many bytes, the server reads and discards before it closes.
LINGER_S = 2.0
LINGER_MAX_BYTES = 1024 * 1024

_TITLES = {
    400: "Bad Request",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
}

Refusal = tuple[int, str]  # (status, detail)


@dataclass(frozen=True)
class HttpLimits:
    max_request_line_bytes: int = 8 * 1024
    max_head_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: float = 5.0

    @classmethod
    def of(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_request_line_bytes=settings.http_max_request_line_bytes,
            max_head_bytes=settings.http_max_head_bytes,
            max_headers=settings.http_max_headers,
            header_timeout_s=settings.http_header_timeout_s,
            body_timeout_s=settings.http_body_timeout_s,
            keep_alive_s=settings.http_keep_alive_s,
        )


def refusal_bytes(status: int, detail: str) -> bytes:
    """A complete HTTP/1.1 answer with a problem+json body and the security headers of every
    answer; the connection closes."""
    title = _TITLES[status]
    body = json.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        separators=(",", ":"),
    ).encode()
    head = (
        f"HTTP/1.1 {status} {title}\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n"
    ).encode("ascii")
    secured = "".join(f"{name}: {value}\r\n" for name, value in SECURITY_HEADERS).encode("ascii")
    return head + secured + b"\r\n" + body


class _Connection(h11.Connection):
    """h11's server side, which also refuses a request with more than ``max_headers`` header
    fields, and remembers why it refused a request."""

    def __init__(self, *, max_headers: int, max_incomplete_event_size: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_incomplete_event_size)
        self.max_headers = max_headers
        self.refusal: Refusal | None = None

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            if self.refusal is None:
                if exc.error_status_hint == 431:
                    self.refusal = (431, "the request head is too large")
                else:
                    self.refusal = (400, "the request is not valid HTTP/1.1")
            raise
        if isinstance(event, h11.Request) and len(event.headers) > self.max_headers:
            self.refusal = (431, f"the request has more than {self.max_headers} header fields")
            raise h11.RemoteProtocolError("too many header fields", error_status_hint=431)
        return event


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with ``limits`` on each request head and read timeouts.

    While h11 waits for a request (``their_state`` IDLE) the bytes that come are part of a
    head: they are counted, and h11 is given at most one byte over the limit."""

    limits: ClassVar[HttpLimits] = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = self.limits
        self.conn: _Connection = _Connection(
            max_headers=limits.max_headers,
            # h11's own bound, for what it holds while a pipelined request waits.
            max_incomplete_event_size=limits.max_head_bytes + 1,
        )
        self._head_bytes = 0
        self._line_bytes = 0
        self._line_open = True
        self._discarding = False
        self._discarded = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._body_seen_at = 0.0

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

    def _reading_head(self) -> bool:
        return self.conn.their_state is h11.IDLE

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            self._discard(len(data))
            return
        limits = self.limits
        while data and self._reading_head():
            if self._line_open:
                end = data.find(b"\n")
                self._line_bytes += len(data) if end < 0 else end
                self._line_open = end < 0
                if self._line_bytes > limits.max_request_line_bytes:
                    self._refuse(
                        (
                            414,
                            "the request line is over the limit of "
                            f"{limits.max_request_line_bytes} bytes",
                        )
                    )
                    return
            room = limits.max_head_bytes - self._head_bytes + 1
            piece, data = (data, b"") if len(data) <= room else (data[:room], data[room:])
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self.transport.is_closing() or self._discarding:
                return
            if not self._reading_head():
                self._head_done()
            elif self._head_bytes > limits.max_head_bytes:
                self._refuse(
                    (431, f"the request head is over the limit of {limits.max_head_bytes} bytes")
                )
                return
        if data:
            super().data_received(data)
        if self.transport.is_closing() or self._discarding:
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            if self._head_bytes and self._head_timer is None:
                self._head_timer = self.loop.call_later(
                    limits.header_timeout_s, self._head_timed_out
                )
        else:
            self._head_done()
            if state is h11.SEND_BODY:
                self._body_seen_at = self.loop.time()
                if self._body_timer is None:
                    self._body_timer = self.loop.call_later(limits.body_timeout_s, self._body_check)

    def _head_done(self) -> None:
        """A request's head is in: the next one is counted from nothing."""
        self._head_bytes = self._line_bytes = 0
        self._line_open = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def handle_events(self) -> None:
        super().handle_events()
        if self._body_timer is not None and self.conn.their_state is not h11.SEND_BODY:
            self._body_timer.cancel()
            self._body_timer = None

    def send_400_response(self, msg: str) -> None:
        # h11 refused the request (malformed, too many header fields, too large a head).
        self._refuse(self.conn.refusal or (400, "the request is not valid HTTP/1.1"))

    # --- timeouts -----------------------------------------------------------------------------
    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._discarding or self.transport.is_closing() or not self._reading_head():
            return
        if self._head_bytes == 0:
            self.transport.close()  # nothing was asked
            return
        self._refuse(
            (408, f"the request head did not arrive within {self.limits.header_timeout_s:g} s")
        )

    def _body_check(self) -> None:
        self._body_timer = None
        if self._discarding or self.transport.is_closing():
            return
        if self.conn.their_state is not h11.SEND_BODY:
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
        self._refuse((408, f"the request body sent nothing for {self.limits.body_timeout_s:g} s"))

    # --- refusing -----------------------------------------------------------------------------
    def _refuse(self, refusal: Refusal) -> None:
        status, detail = refusal
        self._discarding = True
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        peer = f"{self.client[0]}:{self.client[1]}" if self.client else "an unknown peer"
        log.warning("refused a request from %s: %s (%d)", peer, detail, status)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # Refused in the middle of a request (a malformed body): the application hears
            # that the client is gone, and answers nothing more.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                self.transport.close()
                return
        self.transport.write(refusal_bytes(status, detail))
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


def bounded_protocol(limits: HttpLimits) -> type[BoundedH11Protocol]:
    """The protocol class for a server with these ``limits``."""

    class Bounded(BoundedH11Protocol):
        pass

    Bounded.limits = limits
    return Bounded


def server_config(app: Any, settings: Settings, **options: Any) -> uvicorn.Config:
    """The ``uvicorn.Config`` of the connector's server: the bounded h11 protocol with
    ``settings``' limits, no WebSocket upgrade, no ``Server`` header; ``options`` add to it."""
    limits = HttpLimits.of(settings)
    return uvicorn.Config(
        app,
        http=bounded_protocol(limits),
        ws="none",
        timeout_keep_alive=limits.keep_alive_s,  # type: ignore[arg-type]
        server_header=False,
        **options,
    )


class _Server(uvicorn.Server):
    """Says where it listens once it does (the port, for ``--port 0``), and exits 0 after a stop
    by SIGTERM or SIGINT."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # uvicorn raises a captured signal again once it has shut down, so that a clean stop
        # looks like a death by that signal (exit status 143 in a container).
        self._captured_signals.clear()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            print(f"bookingcache-connector listening on http://{shown}:{port}", flush=True)


def serve(
    app: Any,
    settings: Settings,
    *,
    host: str,
    port: int,
    log_level: str = "info",
    access_log: bool = True,
) -> int:
    """Serve ``app`` until SIGINT or SIGTERM; 0 after a clean stop, 1 if it did not start."""
    config = server_config(
        app,
        settings,
        host=host,
        port=port,
        lifespan="on",
        log_level=log_level,
        access_log=access_log,
    )
    server = _Server(config)
    server.run()
    return 0 if server.started else 1
