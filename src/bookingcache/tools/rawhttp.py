"""HTTP/1.1 spoken by hand over real sockets, for what no HTTP client library sends: endless
request lines, stalled heads, idle connections (``bookingcache bench hostile`` and the tests of
the server's limits)."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx


def connect(port: int, *, timeout_s: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket, *, timeout_s: float) -> tuple[bytes, bool]:
    """What the server sends until it closes the connection: (bytes, closed). ``closed`` is
    False if the connection was still open after ``timeout_s``; a reset counts as closed."""
    deadline = time.monotonic() + timeout_s
    received = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bytes(received), False
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return bytes(received), False
        except ConnectionResetError:
            return bytes(received), True
        if not chunk:
            return bytes(received), True
        received += chunk


def read_answer(sock: socket.socket, *, timeout_s: float) -> bytes:
    """One answer with a ``content-length`` (or what came before the connection closed or
    ``timeout_s`` passed)."""
    return read_answers(sock, 1, timeout_s=timeout_s)[0]


def read_answers(sock: socket.socket, count: int, *, timeout_s: float) -> list[bytes]:
    """``count`` answers in a row, each with a ``content-length``; the last one is what came
    before the connection closed or ``timeout_s`` passed if they did not all come."""
    deadline = time.monotonic() + timeout_s
    received = bytearray()
    answers: list[bytes] = []
    while len(answers) < count:
        end = _answer_end(received)
        if end is not None:
            answers.append(bytes(received[:end]))
            del received[:end]
            continue
        remaining = deadline - time.monotonic()
        chunk = b""
        if remaining > 0:
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                chunk = b""
        if not chunk:
            answers.append(bytes(received))
            return answers
        received += chunk
    return answers


def _answer_end(received: bytearray) -> int | None:
    head_end = received.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    length = 0
    for line in bytes(received[:head_end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    end = head_end + 4 + length
    return end if len(received) >= end else None


def get_request(path: str = "/healthz", *, headers: bytes = b"") -> bytes:
    """A ``GET`` of ``path`` with ``headers`` (whole lines, each ending in CRLF) after Host."""
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: test\r\n" + headers + b"\r\n"


def problem_of(answer: bytes) -> dict[str, Any]:
    """The problem details of an answer that refuses a request: ``application/problem+json``,
    and the connection closed after it (``connection: close``)."""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), head
    assert b"connection: close" in head.lower(), head
    problem: dict[str, Any] = json.loads(body)
    return problem


def status_of(answer: bytes) -> int | None:
    """The status code of the first answer in ``answer``, None if there is none."""
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer[9:12])


@dataclass
class Flood:
    """The outcome of sending an endless request: how much went out before the server
    answered (or closed), and what it answered."""

    sent: int
    answer: bytes
    seconds: float


def flood(sock: socket.socket, prefix: bytes, *, total: int, chunk: int = 65536) -> Flood:
    """Send ``prefix`` and then ``total`` bytes of ``a`` in chunks, as a client that reads
    while it sends: it stops at the first sign of an answer (or of a closed connection)."""
    started = time.monotonic()
    sock.sendall(prefix)
    block = b"a" * chunk
    sent = 0
    answer = b""
    try:
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            sock.sendall(block)
            sent += len(block)
    except (BrokenPipeError, ConnectionResetError):
        pass
    with contextlib.suppress(OSError):
        answer = read_answer(sock, timeout_s=10.0)
    return Flood(sent=sent, answer=answer, seconds=time.monotonic() - started)


@dataclass
class Siege:
    """Endless requests sent one after another while a client polls ``/healthz``."""

    floods: list[Flood] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0
    health: list[float] = field(default_factory=list)  # when each health check answered 200
    failures: list[str] = field(default_factory=list)  # a failed check ends the polling

    @property
    def health_answered_during(self) -> bool:
        return any(self.started <= at <= self.ended for at in self.health)


def flood_while_health_answers(
    port: int,
    prefix: bytes,
    *,
    total: int,
    at_least: int = 5,
    seconds: float = 0.5,
    timeout_s: float = 10.0,
) -> Siege:
    """``flood`` the server on ``port`` (``prefix``, then ``total`` bytes) on one connection
    after another, ``at_least`` times and for ``seconds`` at least, while another thread asks
    its ``/healthz``."""
    siege = Siege()
    stop = threading.Event()

    def poll_health() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=timeout_s) as client:
            while not stop.is_set():
                try:
                    status = client.get("/healthz").status_code
                except httpx.HTTPError as error:
                    siege.failures.append(f"{type(error).__name__}: {error}")
                    return
                if status != 200:
                    siege.failures.append(f"health answered {status}")
                    return
                siege.health.append(time.monotonic())

    poller = threading.Thread(target=poll_health, daemon=True)
    poller.start()
    siege.started = time.monotonic()
    try:
        while len(siege.floods) < at_least or time.monotonic() - siege.started < seconds:
            with connect(port) as sock:
                siege.floods.append(flood(sock, prefix, total=total))
    finally:
        siege.ended = time.monotonic()
        stop.set()
        poller.join(timeout=timeout_s)
    return siege
