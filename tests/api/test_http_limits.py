"""The HTTP server's bounds (``bookingcache.api.server``), on a real uvicorn server on a
loopback port with the configuration ``bookingcache serve`` uses, spoken to over real sockets:
request heads of bounded size, read timeouts, and idle connections closed."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

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
    read_until_closed,
    status_of,
)
from tests.support import http_limits
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


@pytest.mark.parametrize("check", http_limits.CHECKS, ids=lambda check: check.__name__)
def test_the_bounds_both_servers_keep(check: Callable[[http_limits.Serving], None]) -> None:
    check(serving)


def test_a_large_body_in_the_same_read_as_its_head_is_not_counted_as_head() -> None:
    http_limits.a_large_body_in_the_same_read_as_its_head_is_not_counted_as_head(
        serving, {"http_max_target_bytes": 1024, "http_max_head_bytes": 4096}
    )


def test_a_stalled_head_is_answered_408_and_closed_after_the_header_timeout() -> None:
    with serving(http_header_timeout_s=0.5) as port, connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: te")
        answer, closed = read_until_closed(sock, timeout_s=WAIT_S)
    assert status_of(answer) == 408
    assert problem_of(answer)["type"] == "urn:bookingcache:problem:request-timeout"
    assert closed


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
