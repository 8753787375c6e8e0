"""HTTP/1.1 spoken by hand over real sockets, for the tests of the connector's server: endless
request lines, stalled heads, idle connections, which no HTTP client library sends."""

from __future__ import annotations

import contextlib
import select
import socket
import time
from dataclasses import dataclass


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
