"""Checks of an HTTP server's bounds that the service's server and the connector's share
(the same limits, set by ``http_*`` settings of either): each takes ``serving``, a context
manager that serves a test app (``GET /healthz``, and ``POST /echo`` answering the length of
the body it read) under the server's configuration with the limits it is given, and yields
its port."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from bookingcache.tools.rawhttp import (
    connect,
    get_request,
    problem_of,
    read_answer,
    read_answers,
    read_until_closed,
    status_of,
)

Serving = Callable[..., contextlib.AbstractContextManager[int]]
# Generous: these bound how long a check waits for what must happen, not how fast it happens.
WAIT_S = 10.0


def too_many_header_fields_are_431(serving: Serving) -> None:
    with serving(http_max_headers=100) as port:
        # Host and 99 more: served.
        with connect(port) as sock:
            sock.sendall(get_request(headers=b"".join(b"X-%d: v\r\n" % i for i in range(99))))
            assert status_of(read_answer(sock, timeout_s=WAIT_S)) == 200
        with connect(port) as sock:
            sock.sendall(get_request(headers=b"".join(b"X-%d: v\r\n" % i for i in range(100))))
            answer, closed = read_until_closed(sock, timeout_s=WAIT_S)
    assert status_of(answer) == 431
    assert "more than 100 header fields" in problem_of(answer)["detail"]
    assert closed


def a_large_body_in_the_same_read_as_its_head_is_not_counted_as_head(
    serving: Serving, small: Mapping[str, Any]
) -> None:
    """``small``: limits of a request line and a head far below the body's size."""
    body = b"b" * (512 * 1024)
    head = b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % len(body)
    with serving(**small) as port, connect(port) as sock:
        sock.sendall(head + body + head + body)
        answers = read_answers(sock, 2, timeout_s=WAIT_S)
    for answer in answers:
        assert status_of(answer) == 200, answer[:200]
        assert json.loads(answer.partition(b"\r\n\r\n")[2]) == {"length": len(body)}


def pipelined_requests_are_all_answered(serving: Serving) -> None:
    with serving() as port, connect(port) as sock:
        sock.sendall(get_request() * 3)
        answers = read_answers(sock, 3, timeout_s=WAIT_S)
    assert [status_of(a) for a in answers] == [200, 200, 200]


def a_head_sent_a_byte_at_a_time_is_cut_at_the_header_timeout(serving: Serving) -> None:
    request = get_request(headers=b"X-Slow: " + b"s" * 200 + b"\r\n")
    with serving(http_header_timeout_s=0.5) as port, connect(port) as sock:
        started = time.monotonic()
        try:
            for byte in request:
                sock.sendall(bytes([byte]))
                time.sleep(0.02)
                if time.monotonic() - started > WAIT_S:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer, closed = read_until_closed(sock, timeout_s=WAIT_S)
    # 250 bytes at 20 ms are 5 s: each byte did not put the deadline off.
    assert status_of(answer) == 408
    assert closed


def a_connection_that_sends_nothing_is_closed_after_the_header_timeout(serving: Serving) -> None:
    with serving(http_header_timeout_s=0.5) as port, connect(port) as sock:
        answer, closed = read_until_closed(sock, timeout_s=WAIT_S)
    assert (answer, closed) == (b"", True)


def many_stalled_connections_do_not_keep_out_a_request_and_are_all_closed(serving: Serving) -> None:
    with serving(http_header_timeout_s=1.0) as port:
        stalled = [connect(port) for _ in range(200)]
        try:
            for sock in stalled:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Never: ")
            with httpx.Client(timeout=WAIT_S) as client:
                assert client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            outcomes = [read_until_closed(sock, timeout_s=WAIT_S) for sock in stalled]
        finally:
            for sock in stalled:
                sock.close()
    assert all(closed for _, closed in outcomes)
    assert {status_of(answer) for answer, _ in outcomes} == {408}


def a_stalled_body_is_answered_408_after_the_body_timeout(serving: Serving) -> None:
    head = b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n"
    with serving(http_body_timeout_s=0.5) as port, connect(port) as sock:
        sock.sendall(head + b"0123456789")
        answer, closed = read_until_closed(sock, timeout_s=WAIT_S)
    assert status_of(answer) == 408
    assert "request body" in problem_of(answer)["detail"]
    assert closed


def a_body_that_keeps_coming_is_read_whatever_its_total_time(serving: Serving) -> None:
    head = b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 12\r\n\r\n"
    with serving(http_body_timeout_s=0.5) as port, connect(port) as sock:
        sock.sendall(head)
        for _ in range(12):  # 12 x 0.15 s: longer than the timeout, never idle that long
            time.sleep(0.15)
            sock.sendall(b"x")
        answer = read_answer(sock, timeout_s=WAIT_S)
    assert status_of(answer) == 200
    assert json.loads(answer.partition(b"\r\n\r\n")[2]) == {"length": 12}


def an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(serving: Serving) -> None:
    with serving(http_keep_alive_s=0.3) as port, connect(port) as sock:
        sock.sendall(get_request())
        assert status_of(read_answer(sock, timeout_s=WAIT_S)) == 200
        started = time.monotonic()
        rest, closed = read_until_closed(sock, timeout_s=WAIT_S)
        waited = time.monotonic() - started
    assert (rest, closed) == (b"", True)
    # Closed by its own timeout, not by the header timeout's 10 s (nor uvicorn's usual 5 s).
    assert waited < 4.0


def a_kept_alive_connection_serves_a_request_after_the_header_timeout(serving: Serving) -> None:
    """The header timeout runs from a head's first byte, not from the previous answer:
    a connection kept alive longer than it still serves its next request."""
    with (
        serving(http_header_timeout_s=0.5, http_keep_alive_s=5.0) as port,
        connect(port) as sock,
    ):
        sock.sendall(get_request())
        assert status_of(read_answer(sock, timeout_s=WAIT_S)) == 200
        time.sleep(1.0)
        sock.sendall(get_request())
        assert status_of(read_answer(sock, timeout_s=WAIT_S)) == 200


# The checks that take the server alone, for a test parametrised over them.
CHECKS: tuple[Callable[[Serving], None], ...] = (
    too_many_header_fields_are_431,
    pipelined_requests_are_all_answered,
    a_head_sent_a_byte_at_a_time_is_cut_at_the_header_timeout,
    a_connection_that_sends_nothing_is_closed_after_the_header_timeout,
    many_stalled_connections_do_not_keep_out_a_request_and_are_all_closed,
    a_stalled_body_is_answered_408_after_the_body_timeout,
    a_body_that_keeps_coming_is_read_whatever_its_total_time,
    an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout,
    a_kept_alive_connection_serves_a_request_after_the_header_timeout,
)
