"""The HTTP server's bounds (``bookingcache.api.server``), on a real uvicorn server on a
loopback port with the configuration ``bookingcache serve`` uses, spoken to over real sockets:
request heads of bounded size, read timeouts, and idle connections closed."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bookingcache.api.server import server_config
from bookingcache.settings import Settings
from bookingcache.tools.rawhttp import (
    connect,
    flood,
    flood_while_health_answers,
    get_request,
    problem_of,
    read_answer,
    read_answers,
    read_until_closed,
    status_of,
)
from tests.support.servers import bound_socket

MIB = 1024 * 1024
# Generous: these bound how long a test waits for what must happen, not how fast it happens.
WAIT_S = 10.0


async def _health(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"length": len(body)})


def _app() -> Starlette:
    return Starlette(routes=[Route("/healthz", _health), Route("/echo", _echo, methods=["POST"])])


@contextlib.contextmanager
def serving(**limits: Any) -> Iterator[int]:
    """The test app under ``server_config`` with these ``http_*`` settings; yields the port."""
    settings = Settings(environment="development", **limits)
    sock = bound_socket()
    server = uvicorn.Server(server_config(_app(), settings, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def test_a_64_mib_request_target_is_refused_at_once_while_health_answers() -> None:
    # At least half a second, one 64 MiB request target after another.
    with serving() as port:
        siege = flood_while_health_answers(port, b"GET /", total=64 * MIB, timeout_s=WAIT_S)
    assert not siege.failures, siege.failures
    for attempt in siege.floods:
        assert status_of(attempt.answer) == 414, attempt.answer[:200]
        # Refused long before the client was done: the server did not read the target on.
        assert attempt.sent < 8 * MIB
        assert problem_of(attempt.answer)["type"] == "urn:bookingcache:problem:uri-too-long"
    assert siege.health_answered_during, "health did not answer during it"


def test_a_target_at_the_limit_is_served() -> None:
    with serving(http_max_target_bytes=1024) as port, connect(port) as sock:
        target = "/healthz?pad=" + "x" * (1024 - len("/healthz?pad="))
        sock.sendall(get_request(target))
        assert status_of(read_answer(sock, timeout_s=WAIT_S)) == 200
        sock.sendall(get_request(target + "x"))
        assert status_of(read_answer(sock, timeout_s=WAIT_S)) == 414


def test_a_head_over_the_limit_is_431() -> None:
    with serving() as port, connect(port) as sock:
        attempt = flood(sock, b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: ", total=64 * MIB)
    assert status_of(attempt.answer) == 431, attempt.answer[:200]
    assert attempt.sent < 8 * MIB
    problem = problem_of(attempt.answer)
    assert problem["type"] == "urn:bookingcache:problem:header-fields-too-large"
    assert problem["status"] == 431
    # Like every answer of the service: a request id and the security headers.
    head = attempt.answer.split(b"\r\n\r\n", 1)[0].lower()
    assert re.search(rb"\r\nx-request-id: [0-9a-f]{16}\r\n", head), head
    assert b"\r\ncontent-security-policy: default-src 'none'; frame-ancestors 'none'" in head
    assert b"\r\nx-content-type-options: nosniff" in head


def test_many_small_headers_over_the_size_are_431_too() -> None:
    small = {"http_max_target_bytes": 1024, "http_max_head_bytes": 4096}
    with serving(**small, http_max_headers=1000) as port, connect(port) as sock:
        fields = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 40) for i in range(200))
        sock.sendall(get_request(headers=fields))
        assert status_of(read_answer(sock, timeout_s=WAIT_S)) == 431


def test_too_many_header_fields_are_431() -> None:
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


def test_a_large_body_in_the_same_read_as_its_head_is_not_counted_as_head() -> None:
    body = b"b" * (512 * 1024)
    head = b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % len(body)
    small = {"http_max_target_bytes": 1024, "http_max_head_bytes": 4096}
    with serving(**small) as port, connect(port) as sock:
        sock.sendall(head + body + head + body)
        answers = read_answers(sock, 2, timeout_s=WAIT_S)
    for answer in answers:
        assert status_of(answer) == 200, answer[:200]
        assert json.loads(answer.partition(b"\r\n\r\n")[2]) == {"length": len(body)}


def test_pipelined_requests_are_all_answered() -> None:
    with serving() as port, connect(port) as sock:
        sock.sendall(get_request() * 3)
        answers = read_answers(sock, 3, timeout_s=WAIT_S)
    assert [status_of(a) for a in answers] == [200, 200, 200]


def test_a_stalled_head_is_answered_408_and_closed_after_the_header_timeout() -> None:
    with serving(http_header_timeout_s=0.5) as port, connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: te")
        answer, closed = read_until_closed(sock, timeout_s=WAIT_S)
    assert status_of(answer) == 408
    assert problem_of(answer)["type"] == "urn:bookingcache:problem:request-timeout"
    assert closed


def test_a_head_sent_a_byte_at_a_time_is_cut_at_the_header_timeout() -> None:
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


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout() -> None:
    with serving(http_header_timeout_s=0.5) as port, connect(port) as sock:
        answer, closed = read_until_closed(sock, timeout_s=WAIT_S)
    assert (answer, closed) == (b"", True)


def test_many_stalled_connections_do_not_keep_out_a_request_and_are_all_closed() -> None:
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


def test_a_stalled_body_is_answered_408_after_the_body_timeout() -> None:
    head = b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n"
    with serving(http_body_timeout_s=0.5) as port, connect(port) as sock:
        sock.sendall(head + b"0123456789")
        answer, closed = read_until_closed(sock, timeout_s=WAIT_S)
    assert status_of(answer) == 408
    assert "request body" in problem_of(answer)["detail"]
    assert closed


def test_a_body_that_keeps_coming_is_read_whatever_its_total_time() -> None:
    head = b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 12\r\n\r\n"
    with serving(http_body_timeout_s=0.5) as port, connect(port) as sock:
        sock.sendall(head)
        for _ in range(12):  # 12 x 0.15 s: longer than the timeout, never idle that long
            time.sleep(0.15)
            sock.sendall(b"x")
        answer = read_answer(sock, timeout_s=WAIT_S)
    assert status_of(answer) == 200
    assert json.loads(answer.partition(b"\r\n\r\n")[2]) == {"length": 12}


def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout() -> None:
    with serving(http_keep_alive_s=0.3) as port, connect(port) as sock:
        sock.sendall(get_request())
        assert status_of(read_answer(sock, timeout_s=WAIT_S)) == 200
        started = time.monotonic()
        rest, closed = read_until_closed(sock, timeout_s=WAIT_S)
        waited = time.monotonic() - started
    assert (rest, closed) == (b"", True)
    # Closed by its own timeout, not by the header timeout's 10 s (nor uvicorn's usual 5 s).
    assert waited < 4.0


def test_a_kept_alive_connection_serves_a_request_after_the_header_timeout() -> None:
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


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"http_max_target_bytes": 65536, "http_max_head_bytes": 65536}, "less than"),
        ({"http_header_timeout_s": 0}, "greater than 0"),
        ({"http_max_headers": 0}, "greater than or equal to 1"),
    ],
)
def test_nonsensical_limits_are_refused(limits: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**limits)
