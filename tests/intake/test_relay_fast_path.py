"""The connector relay's call answered before the stack (``intake.RelayEndpoint``) answers
exactly as its documented route does: the same status, body and headers, the same refusals,
the same count of failed attempts and the same metrics; a call with a query string or an
``Origin`` goes the full way."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bookingcache.api import intake as intake_api
from bookingcache.clock import FixedClock
from bookingcache.store.sql.store import SqlStore
from tests.support.signing import sign
from tests.support.tenants import Org, add_org

from .test_relay_intake import call, change, post_signed


class Taken:
    """Counts the calls the fast path answered."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        answer = intake_api.RelayEndpoint._answer

        async def counting(endpoint: Any, *args: Any) -> int:
            self.count += 1
            return await answer(endpoint, *args)

        monkeypatch.setattr(intake_api.RelayEndpoint, "_answer", counting)


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> Taken:
    return Taken(monkeypatch)


def _shape(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    headers = sorted(
        (name, "<id>" if name == "x-request-id" else value)
        for name, value in response.headers.multi_items()
    )
    return response.status_code, response.content, headers


async def both_ways(app: FastAPI, taken: Taken, send: Any) -> tuple[httpx.Response, httpx.Response]:
    """``send()`` once with the fast path and once without; (fast answer, full answer)."""
    before = taken.count
    fast = await send()
    assert taken.count == before + 1
    app.relay_fast_path = False  # type: ignore[attr-defined]
    try:
        full = await send()
    finally:
        app.relay_fast_path = True  # type: ignore[attr-defined]
    assert taken.count == before + 1
    return fast, full


async def test_accepted_calls_are_answered_as_the_route_answers(
    app: FastAPI, client: httpx.AsyncClient, store: SqlStore, clock: FixedClock, taken: Taken
) -> None:
    org = await add_org(store)
    payload = call(changes=[change(org.mailboxes[0]), change("someone@elsewhere.example")])
    fast, full = await both_ways(app, taken, lambda: post_signed(client, org, payload, clock=clock))
    assert fast.status_code == 202, fast.text
    assert fast.json() == {
        "notifications": 1,
        "windowsApplied": 0,
        "ignoredMailboxes": ["someone@elsewhere.example"],
    }
    assert _shape(fast) == _shape(full)


async def _post(
    client: httpx.AsyncClient,
    org: Org,
    body: bytes,
    clock: FixedClock,
    *,
    content_type: str = "application/json",
    secret: str | None = None,
    tenant: str | None = None,
) -> httpx.Response:
    target = f"/v1/tenants/{tenant or org.id}/notifications"
    headers = sign(secret or org.secret, "POST", target, body, at=clock.now())
    headers["Content-Type"] = content_type
    return await client.post(target, content=body, headers=headers)


async def test_refusals_are_answered_as_the_route_answers(
    app: FastAPI, client: httpx.AsyncClient, store: SqlStore, clock: FixedClock, taken: Taken
) -> None:
    org = await add_org(store)
    good = json.dumps(call(changes=[change(org.mailboxes[1])])).encode()
    cases: list[tuple[int, dict[str, Any]]] = [
        (400, {"body": b"{not json"}),
        (422, {"body": json.dumps({"changes": [{"mailbox": 3}]}).encode()}),
        (415, {"body": good, "content_type": "text/plain"}),
        (413, {"body": b"[" + b" " * (1024 * 1024) + b"]"}),
        (401, {"body": good, "secret": "whsec_" + "QUJD" * 8}),
        (401, {"body": good, "tenant": "t-nobody-here"}),
    ]
    for status, options in cases:
        body = options.pop("body")
        fast, full = await both_ways(
            app,
            taken,
            lambda body=body, options=options: _post(client, org, body, clock, **options),
        )
        assert fast.status_code == status, (status, fast.text)
        assert fast.headers["content-type"] == "application/problem+json"
        assert _shape(fast) == _shape(full)


async def test_failed_attempts_count_the_same_either_way(
    app: FastAPI, client: httpx.AsyncClient, store: SqlStore, clock: FixedClock, taken: Taken
) -> None:
    """20 failures a minute per client address (the default burst), whichever way they came:
    the 21st is 429 with Retry-After both ways."""
    org = await add_org(store)
    good = json.dumps(call()).encode()
    wrong = "whsec_" + "QUJD" * 8
    statuses = []
    for index in range(10):
        fast, full = await both_ways(
            app, taken, lambda: _post(client, org, good, clock, secret=wrong)
        )
        statuses += [fast.status_code, full.status_code]
        assert _shape(fast) == _shape(full), index
    fast, full = await both_ways(app, taken, lambda: _post(client, org, good, clock, secret=wrong))
    assert statuses == [401] * 20
    assert (fast.status_code, full.status_code) == (429, 429)
    assert fast.headers["retry-after"] == full.headers["retry-after"]
    assert _shape(fast) == _shape(full)
    # A call that verifies is never refused for it.
    accepted = await post_signed(client, org, call(), clock=clock)
    assert accepted.status_code == 202


async def test_the_fast_path_is_counted_under_the_routes_template(
    client: httpx.AsyncClient, store: SqlStore, clock: FixedClock, taken: Taken
) -> None:
    org = await add_org(store)
    for _ in range(3):
        response = await post_signed(client, org, call(), clock=clock)
        assert response.status_code == 202
    assert taken.count == 3
    metrics = (await client.get("/metrics")).text
    series = (
        'bookingcache_http_requests_total{method="POST",'
        'route="/v1/tenants/{tenant}/notifications",status="202"} 3.0'
    )
    assert series in metrics


async def test_calls_with_a_query_or_an_origin_go_the_full_way(
    client: httpx.AsyncClient, store: SqlStore, clock: FixedClock, taken: Taken
) -> None:
    org = await add_org(store)
    body = json.dumps(call()).encode()
    target = f"/v1/tenants/{org.id}/notifications"
    headers = sign(org.secret, "POST", target + "?x=1", body, at=clock.now())
    headers["Content-Type"] = "application/json"
    response = await client.post(target + "?x=1", content=body, headers=headers)
    assert response.status_code == 202  # signed over the query too
    headers = sign(org.secret, "POST", target, body, at=clock.now())
    headers |= {"Content-Type": "application/json", "Origin": "https://map.example"}
    response = await client.post(target, content=body, headers=headers)
    assert response.status_code == 202
    assert taken.count == 0
