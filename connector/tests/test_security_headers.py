"""Every answer of the connector, on either host, carries the security headers."""

from __future__ import annotations

import json
from typing import Any

import httpx

from bookingcache_connector.app import create_app
from bookingcache_connector.signing import Signer

from .conftest import WEBHOOK_SECRET
from .fakes import FakeClock
from .test_function_app import handlers, request

EXPECTED = {
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-resource-policy": "same-origin",
}


def assert_secured(headers: Any) -> None:
    for name, value in EXPECTED.items():
        assert headers.get(name) == value, name


async def test_asgi_answers_carry_the_security_headers(
    make_connector: Any, clock: FakeClock
) -> None:
    app = create_app(make_connector())
    body = json.dumps({"mailboxes": [], "notificationUrl": "https://x", "clientState": "s"})
    signed = Signer(WEBHOOK_SECRET, clock).headers("PUT", "/v1/subscriptions", body.encode())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://c"
    ) as http:
        answers = {
            "health": await http.get("/healthz"),
            "404": await http.get("/nothing/here"),
            "handshake": await http.post("/graph/notifications?validationToken=abc"),
            "503": await http.post("/graph/notifications", content=b"{nope"),  # no relay here
            "401": await http.put("/v1/subscriptions", content=body),
            "signed": await http.put("/v1/subscriptions", content=body, headers=signed),
        }
        secure = await http.get("/healthz", headers={"x-forwarded-proto": "https"})
    assert {k: r.status_code for k, r in answers.items()} == {
        "health": 200,
        "404": 404,
        "handshake": 200,
        "503": 503,
        "401": 401,
        "signed": 200,
    }
    for response in answers.values():
        assert_secured(response.headers)
        assert "strict-transport-security" not in response.headers
    assert answers["signed"].headers["cache-control"] == "no-store"
    assert "cache-control" not in answers["health"].headers
    # ASGITransport reports the scheme of the URL; a proxy header alone proves nothing here.
    assert "strict-transport-security" not in secure.headers
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://c"
    ) as http:
        over_tls = await http.get("/healthz")
    assert over_tls.headers["strict-transport-security"] == "max-age=31536000"


async def test_function_answers_carry_the_security_headers(make_connector: Any) -> None:
    functions = handlers(make_connector())
    health = await functions["healthz"](request("GET", "/healthz"))
    assert health.status_code == 200
    assert_secured({k.lower(): v for k, v in health.headers.items()})
    assert health.headers.get("strict-transport-security") == "max-age=31536000"
    refused = await functions["subscriptions"](request("PUT", "/v1/subscriptions", b"{}"))
    assert refused.status_code == 401
    assert_secured({k.lower(): v for k, v in refused.headers.items()})
