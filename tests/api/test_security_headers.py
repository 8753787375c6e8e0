"""Every answer carries the security headers: JSON, text and HTML, errors (404, 405, 413, 500)
and Graph's webhook fast path; the documentation pages get a policy that lets exactly their
own scripts run, the live availability page one that allows only its own origin's files."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from bookingcache.bootstrap import service_app
from bookingcache.clock import FixedClock
from bookingcache.settings import Settings
from bookingcache.store.sql.store import SqlStore
from tests.support.auth import ADMIN, ADMIN_TOKEN
from tests.support.databases import SECRETS_KEY
from tests.support.servers import serve_in_thread
from tests.support.signing import sign
from tests.support.tenants import add_org

JSON_POLICY = "default-src 'none'; frame-ancestors 'none'"
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
COMMON = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-resource-policy": "same-origin",
}


def assert_secured(response: httpx.Response, *, policy: str | None = JSON_POLICY) -> None:
    for name, value in COMMON.items():
        assert response.headers.get_list(name) == [value], (response.url, name)
    if policy is not None:
        assert response.headers.get_list("content-security-policy") == [policy], response.url


async def test_json_text_and_error_answers_carry_the_headers(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    async def crash() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/test/crash", crash)
    json_type = {"content-type": "application/json"}
    answers = {
        "json": await client.get("/healthz"),
        "text": await client.get("/metrics"),
        "openapi": await client.get("/openapi.json"),
        "404": await client.get("/no/such/thing"),
        "405": await client.put("/healthz"),
        "413": await client.post(
            "/v1/tenants", content=b"x" * (1024 * 1024 + 1), headers={**ADMIN, **json_type}
        ),
        "422": await client.post("/v1/tenants", json={}, headers=ADMIN),
        "500": await client.get("/test/crash"),
        "webhook 202": await client.post(
            "/graph/notifications/contoso", json={"value": []}, headers=json_type
        ),
        "webhook 400": await client.post(
            "/graph/lifecycle/contoso", content=b"{nope", headers=json_type
        ),
        "webhook handshake": await client.post("/graph/notifications/contoso?validationToken=t"),
    }
    statuses = {name: response.status_code for name, response in answers.items()}
    assert statuses == {
        "json": 200,
        "text": 200,
        "openapi": 200,
        "404": 404,
        "405": 405,
        "413": 413,
        "422": 422,
        "500": 500,
        "webhook 202": 202,
        "webhook 400": 400,
        "webhook handshake": 200,
    }
    for response in answers.values():
        assert_secured(response)
    # Plain http: no HSTS, which would mean nothing and cannot be known to be right.
    assert all("strict-transport-security" not in r.headers for r in answers.values())


async def test_answers_to_a_credential_are_not_stored_by_caches(
    client: httpx.AsyncClient, store: SqlStore, clock: FixedClock
) -> None:
    listed = await client.get("/v1/tenants", headers=ADMIN)
    assert listed.status_code == 200
    assert listed.headers["cache-control"] == "no-store"
    refused = await client.get("/v1/tenants", headers={"Authorization": "Bearer wrong-token"})
    assert refused.status_code == 401
    assert refused.headers["cache-control"] == "no-store"
    org = await add_org(store)
    target = f"/v1/tenants/{org.id}/notifications"
    body = json.dumps({"changes": [], "lifecycle": [], "resync": [org.mailboxes[0]]}).encode()
    headers = {**sign(org.secret, "POST", target, body, at=clock.now()), **COMMON_JSON}
    relayed = await client.post(target, content=body, headers=headers)
    assert relayed.status_code == 202, relayed.text
    assert relayed.headers["cache-control"] == "no-store"
    assert_secured(relayed)
    # An answer that names no credential is left to its own caching rules.
    assert "cache-control" not in (await client.get("/healthz")).headers


COMMON_JSON = {"content-type": "application/json"}


def _nonces(html: str) -> list[str]:
    return re.findall(r'<script nonce="([^"]+)"', html)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_documentation_pages_allow_exactly_their_own_scripts(
    client: httpx.AsyncClient, page: str
) -> None:
    first = await client.get(page)
    second = await client.get(page)
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/html")
    assert_secured(first, policy=None)
    assert first.headers["cache-control"] == "no-store"
    policy = first.headers["content-security-policy"]
    directives = dict(
        ([*part.strip().split(" ", 1), ""])[:2] for part in policy.split(";") if part.strip()
    )
    assert directives["default-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["connect-src"] == "'self'"
    scripts = directives["script-src"].split()
    assert "'unsafe-inline'" not in scripts
    assert "'unsafe-eval'" not in scripts
    [nonce_source] = [s for s in scripts if s.startswith("'nonce-")]
    nonce = nonce_source.removeprefix("'nonce-").removesuffix("'")
    assert len(nonce) >= 16
    # Every script tag carries the answer's nonce, and only this answer's.
    assert first.text.count("<script") == len(_nonces(first.text)) >= 1
    assert set(_nonces(first.text)) == {nonce}
    assert set(_nonces(second.text)).isdisjoint({nonce})
    assert "/openapi.json" in first.text


@pytest.mark.parametrize("path", ["/", "/page/app.js", "/page/page.css", "/page/icon.svg"])
async def test_the_live_page_allows_only_files_of_its_own_origin(
    client: httpx.AsyncClient, path: str
) -> None:
    answer = await client.get(path)
    assert answer.status_code == 200
    assert_secured(answer, policy=PAGE_POLICY)
    policy = answer.headers["content-security-policy"]
    for allowed in ("'unsafe-inline'", "'unsafe-eval'", "'nonce-", "http:", "https:", "*", "data:"):
        assert allowed not in policy, allowed
    # Revalidated on each load: a new version of the service is picked up at once.
    assert answer.headers["cache-control"] == "no-cache"


@pytest.fixture(params=[0, 1], ids=["no-proxy-trusted", "one-proxy-trusted"])
def served(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Iterator[str]:
    settings = Settings(
        environment="development",
        data_dir=tmp_path / "data",
        database_url=database_url,
        admin_token=SecretStr(ADMIN_TOKEN),
        secrets_key=SecretStr(SECRETS_KEY),
        database_wait_s=0,
        trusted_proxy_hops=request.param,
    )
    app = service_app(settings, clock=FixedClock(dt.datetime.now(dt.UTC)))
    # As ``bookingcache serve`` runs it: uvicorn itself believes no forwarded header.
    with serve_in_thread(app, proxy_headers=False) as url:
        yield url


def test_on_the_wire_and_hsts_only_for_https(served: str, request: pytest.FixtureRequest) -> None:
    """A real uvicorn on loopback. HSTS only when the trusted proxy says the request came over
    https: a client cannot claim it itself when no proxy is trusted."""
    proxy_trusted = request.node.callspec.params["served"] == 1
    with httpx.Client(base_url=served) as client:
        plain = client.post("/graph/notifications/contoso", json={"value": []})
        assert plain.status_code == 202
        assert_secured(plain)
        assert "strict-transport-security" not in plain.headers
        for response in (
            client.post(
                "/graph/notifications/contoso",
                json={"value": []},
                headers={"X-Forwarded-Proto": "https"},
            ),
            client.get("/no/such/thing", headers={"X-Forwarded-Proto": "https"}),
            client.get("/healthz", headers={"X-Forwarded-Proto": "https"}),
        ):
            assert_secured(response)
            if not proxy_trusted:
                assert "strict-transport-security" not in response.headers
                continue
            assert response.headers["strict-transport-security"] == "max-age=31536000"
