"""No credential in a URL reaches the connector's log, or its ``check`` report: an Azure
Function key (``?code=``) or a user and password, whether httpx logs the request or the
connector quotes the URL."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from bookingcache_connector.bootstrap import Connector
from bookingcache_connector.check import check_notification_url
from bookingcache_connector.redact import redact_urls

from .servers import ServerThread

FUNCTION_KEY = "fnkey-5b9e2c1d0a7f4e3b"
PASSWORD = "pw-8c1f0e6d2b"


async def _validation_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    query = dict(
        pair.split("=", 1) for pair in scope["query_string"].decode().split("&") if "=" in pair
    )
    token = unquote(query.get("validationToken", "")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": token})


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    handler = logging.Formatter()
    return "\n".join(handler.format(record) for record in caplog.records)


async def test_function_keys_and_passwords_never_reach_the_log(
    make_connector: Callable[..., Connector], caplog: pytest.LogCaptureFixture
) -> None:
    make_connector()  # what every entry point builds first
    caplog.set_level(logging.DEBUG)
    with ServerThread(_validation_echo) as server:
        url = (
            f"http://relay:{PASSWORD}@127.0.0.1:{server.port}/api/notifications?code={FUNCTION_KEY}"
        )
        async with httpx.AsyncClient(trust_env=False) as http:
            finding = await check_notification_url(http, url)
    assert finding.ok, finding.detail
    logging.getLogger("bookingcache_connector.relay").warning(
        "forwarding to %s failed", url, exc_info=RuntimeError(f"cannot reach {url}")
    )
    logged = _logged(caplog)
    assert "HTTP Request: POST http://***@127.0.0.1" in logged  # httpx's line is there...
    assert "code=***" in logged
    assert "forwarding to http://***@127.0.0.1" in logged
    for secret in (FUNCTION_KEY, PASSWORD):  # ... without the credentials
        assert secret not in logged
        assert secret not in finding.detail


def test_redaction_keeps_what_an_operator_needs() -> None:
    text = 'GET "https://u:p@fn.example/api/n?code=k&x=1#f" then https://graph.example/v1.0/me'
    assert redact_urls(text) == (
        'GET "https://***@fn.example/api/n?code=***&x=***#f" then https://graph.example/v1.0/me'
    )
    assert redact_urls("no url here") == "no url here"
