"""The connector's HTTP server (``bookingcache-connector serve``): bounded request heads, read
timeouts and idle connections closed, on a real uvicorn server on a loopback port spoken to
over real sockets, and as a real process."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

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
from bookingcache_connector.config import Settings, load_settings
from bookingcache_connector.errors import ConfigError
from bookingcache_connector.server import server_config
from tests.support import http_limits

MIB = 1024 * 1024
# Generous: these bound how long a test waits for what must happen, not how fast it happens.
WAIT_S = 10.0
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``GET /healthz``, and ``POST /echo`` answering the length of the body it read."""
    if scope["type"] != "http":
        return
    length = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        length += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = json.dumps({"length": length} if scope["path"] == "/echo" else {"status": "ok"})
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})


def _settings(**limits: Any) -> Settings:
    return Settings(tenant_id="t", client_id="c", client_secret="s", **limits)


@contextlib.contextmanager
def serving(**limits: Any) -> Iterator[int]:
    """The test app under the connector's ``server_config`` with these limits; its port."""
    config = server_config(_app, _settings(**limits), host="127.0.0.1", port=0, lifespan="off")
    config.log_level = "warning"
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def test_a_64_mib_request_line_is_refused_at_once_while_health_answers() -> None:
    with serving() as port:
        siege = flood_while_health_answers(port, b"GET /", total=64 * MIB, timeout_s=WAIT_S)
    assert not siege.failures, siege.failures
    for attempt in siege.floods:
        assert status_of(attempt.answer) == 414, attempt.answer[:200]
        assert attempt.sent < 8 * MIB
        assert "request line" in problem_of(attempt.answer)["detail"]
    assert siege.health_answered_during, "health did not answer during it"


def test_a_request_line_at_the_limit_is_served() -> None:
    with serving(http_max_request_line_bytes=1024) as port, connect(port) as sock:
        line = len(b"GET  HTTP/1.1\r")
        target = "/healthz?pad=" + "x" * (1024 - line - len("/healthz?pad="))
        sock.sendall(get_request(target))
        assert status_of(read_answer(sock, timeout_s=WAIT_S)) == 200
        sock.sendall(get_request(target + "x"))
        assert status_of(read_answer(sock, timeout_s=WAIT_S)) == 414


def test_a_head_over_the_limit_is_431() -> None:
    with serving() as port, connect(port) as sock:
        attempt = flood(sock, b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: ", total=64 * MIB)
    assert status_of(attempt.answer) == 431, attempt.answer[:200]
    assert attempt.sent < 8 * MIB
    assert problem_of(attempt.answer)["status"] == 431
    head = attempt.answer.split(b"\r\n\r\n", 1)[0].lower()
    assert b"\r\ncontent-security-policy: default-src 'none'; frame-ancestors 'none'" in head
    assert b"\r\nx-content-type-options: nosniff" in head


@pytest.mark.parametrize("check", http_limits.CHECKS, ids=lambda check: check.__name__)
def test_the_bounds_both_servers_keep(check: Callable[[http_limits.Serving], None]) -> None:
    check(serving)


def test_a_large_body_in_the_same_read_as_its_head_is_not_counted_as_head() -> None:
    http_limits.a_large_body_in_the_same_read_as_its_head_is_not_counted_as_head(
        serving, {"http_max_request_line_bytes": 1024, "http_max_head_bytes": 4096}
    )


BASE_ENV = {
    "CONNECTOR_TENANT_ID": "t",
    "CONNECTOR_CLIENT_ID": "c",
    "CONNECTOR_CLIENT_SECRET": "s",
}


def test_the_limits_are_read_from_the_environment() -> None:
    settings = load_settings(
        {
            **BASE_ENV,
            "CONNECTOR_HTTP_MAX_REQUEST_LINE_BYTES": "4096",
            "CONNECTOR_HTTP_MAX_HEAD_BYTES": "32768",
            "CONNECTOR_HTTP_MAX_HEADERS": "50",
            "CONNECTOR_HTTP_HEADER_TIMEOUT_S": "2.5",
            "CONNECTOR_HTTP_BODY_TIMEOUT_S": "7",
            "CONNECTOR_HTTP_KEEP_ALIVE_S": "65",
        }
    )
    assert (
        settings.http_max_request_line_bytes,
        settings.http_max_head_bytes,
        settings.http_max_headers,
        settings.http_header_timeout_s,
        settings.http_body_timeout_s,
        settings.http_keep_alive_s,
    ) == (4096, 32768, 50, 2.5, 7.0, 65.0)
    defaults = load_settings(BASE_ENV)
    assert (defaults.http_max_request_line_bytes, defaults.http_max_head_bytes) == (8192, 65536)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CONNECTOR_HTTP_HEADER_TIMEOUT_S": "0"}, "more than 0"),
        ({"CONNECTOR_HTTP_MAX_HEADERS": "1.5"}, "whole number"),
        ({"CONNECTOR_HTTP_MAX_REQUEST_LINE_BYTES": "70000"}, "less than"),
    ],
)
def test_nonsensical_limits_are_refused(env: Mapping[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({**BASE_ENV, **env})


@pytest.mark.slow
def test_serve_command_bounds_requests(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env |= BASE_ENV | {
        "CONNECTOR_STATE_DIR": str(tmp_path / "state"),
        "CONNECTOR_HTTP_HEADER_TIMEOUT_S": "1",
    }
    with subprocess.Popen(
        [sys.executable, "-m", "bookingcache_connector", "serve", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as process:
        try:
            _check_serving(process)
        finally:
            process.terminate()
            stopped = process.wait(timeout=WAIT_S)
        assert stopped == 0  # a stop by SIGTERM is a clean stop


def _check_serving(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    line = process.stdout.readline()
    match = LISTENING.search(line)
    assert match, line
    port = int(match[1])
    with connect(port) as sock:
        attempt = flood(sock, b"GET /", total=64 * MIB)
    assert status_of(attempt.answer) == 414
    assert attempt.sent < 8 * MIB
    with httpx.Client(timeout=WAIT_S) as client:
        health = client.get(f"http://127.0.0.1:{port}/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    with connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: te")
        answer, closed = read_until_closed(sock, timeout_s=WAIT_S)
    assert status_of(answer) == 408
    assert closed
