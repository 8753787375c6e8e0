"""Signed calls into the connector: the service's ``PUT /v1/subscriptions`` and ``GET
/v1/calendars/{mailbox}/events`` are served only when signed with the tenant's secret for this
exact call (method, path, query, body), now, and for the first time.

One matrix over the connector's ASGI app, for both signed operations, each case a call that
differs from a good one in one way: no signature, a wrong secret, another tenant's signature
(made with its secret over the same call), a stale or a future timestamp, absurd timestamps
(``999999999999``, ``-1``, ``1e30``, words; signed with HMAC directly, so the timestamp alone is
wrong), a tampered body, path or query, and a replay of an accepted call. Each is refused with a
401 problem and changes nothing: Graph is not called, its subscriptions stay as they were, and
the state directory's files (the inbox and the accepted ``webhook-id``s) are unchanged. A control
shows the good calls are served.

``test_signing.py`` keeps what is particular to the signature code: interoperation with the
Standard Webhooks library, and the replay memory across restarts and its pruning.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bookingcache_connector.app import create_app
from bookingcache_connector.signing import Signer

from .conftest import WEBHOOK_SECRET
from .fakes import FakeClock, FakeGraph

OTHER_TENANT_SECRET = "whsec_" + base64.b64encode(b"the other tenant's secret bytes!").decode()
WRONG_SECRET = "whsec_" + base64.b64encode(b"w" * 32).decode()
ROOM = "room-a1@contoso.example"
WINDOW = "start=2026-11-24T00:00:00Z&end=2026-11-25T00:00:00Z"


@dataclass(frozen=True)
class Call:
    method: str
    target: str
    body: bytes
    headers: dict[str, str]


def signed(secret: str, clock: FakeClock, method: str, target: str, body: bytes) -> Call:
    return Call(method, target, body, Signer(secret, clock).headers(method, target, body))


def stamped(method: str, target: str, body: bytes, stamp: str) -> Call:
    """Signed correctly with the tenant's secret, for the timestamp text ``stamp``."""
    msg_id = "msg_absurd_time"
    key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
    content = f"{msg_id}.{stamp}.{method} {target}\n".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }
    return Call(method, target, body, headers)


@dataclass(frozen=True)
class Operation:
    method: str
    target: str
    body: bytes
    tampered_body: bytes
    tampered_path: str
    tampered_query: str


DESIRED = {
    "mailboxes": [ROOM],
    "notificationUrl": "https://bookingcache.example.net/graph/notifications/contoso",
    "lifecycleNotificationUrl": "https://bookingcache.example.net/graph/lifecycle/contoso",
    "clientState": "client-state-of-the-signed-calls-matrix",
}
OPERATIONS = {
    "PUT /v1/subscriptions": Operation(
        "PUT",
        "/v1/subscriptions",
        json.dumps(DESIRED).encode(),
        json.dumps({**DESIRED, "mailboxes": [ROOM, "room-b2@contoso.example"]}).encode(),
        "/v1/subscriptions/",
        "/v1/subscriptions?renew=all",
    ),
    "PATCH /v1/subscriptions": Operation(
        "PATCH",
        "/v1/subscriptions",
        json.dumps(DESIRED).encode(),
        json.dumps({**DESIRED, "mailboxes": [ROOM, "room-b2@contoso.example"]}).encode(),
        "/v1/subscriptions/",
        "/v1/subscriptions?renew=all",
    ),
    "GET /v1/calendars/{mailbox}/events": Operation(
        "GET",
        f"/v1/calendars/{ROOM}/events?{WINDOW}",
        b"",
        b"{}",
        f"/v1/calendars/room-b2@contoso.example/events?{WINDOW}",
        f"/v1/calendars/{ROOM}/events?start=2026-11-24T00:00:00Z&end=2026-12-24T00:00:00Z",
    ),
}

SKEW = timedelta(minutes=6)


def _skewed(op: Operation, clock: FakeClock, seconds: float) -> Call:
    other = FakeClock(clock.now())
    other.advance(seconds)
    return signed(WEBHOOK_SECRET, other, op.method, op.target, op.body)


CASES: dict[str, Callable[[Operation, FakeClock], Call]] = {
    "no signature": lambda op, clock: Call(op.method, op.target, op.body, {}),
    "garbage signature": lambda op, clock: Call(
        op.method,
        op.target,
        op.body,
        {
            **signed(WEBHOOK_SECRET, clock, op.method, op.target, op.body).headers,
            "webhook-signature": "v1,%%%% v2,AAAA",
        },
    ),
    "wrong secret": lambda op, clock: signed(WRONG_SECRET, clock, op.method, op.target, op.body),
    "other tenant's signature": lambda op, clock: signed(
        OTHER_TENANT_SECRET, clock, op.method, op.target, op.body
    ),
    "stale timestamp": lambda op, clock: _skewed(op, clock, -SKEW.total_seconds()),
    "future timestamp": lambda op, clock: _skewed(op, clock, SKEW.total_seconds()),
    "timestamp 999999999999": lambda op, clock: stamped(
        op.method, op.target, op.body, "999999999999"
    ),
    "timestamp -1": lambda op, clock: stamped(op.method, op.target, op.body, "-1"),
    "timestamp 1e30": lambda op, clock: stamped(op.method, op.target, op.body, "1e30"),
    "timestamp of 20 digits": lambda op, clock: stamped(op.method, op.target, op.body, "9" * 20),
    "timestamp in words": lambda op, clock: stamped(op.method, op.target, op.body, "tomorrow"),
    "tampered body": lambda op, clock: replace(
        signed(WEBHOOK_SECRET, clock, op.method, op.target, op.body), body=op.tampered_body
    ),
    "tampered path": lambda op, clock: replace(
        signed(WEBHOOK_SECRET, clock, op.method, op.target, op.body), target=op.tampered_path
    ),
    "tampered query": lambda op, clock: replace(
        signed(WEBHOOK_SECRET, clock, op.method, op.target, op.body), target=op.tampered_query
    ),
    "method changed": lambda op, clock: replace(
        signed(WEBHOOK_SECRET, clock, op.method, op.target, op.body),
        method="POST" if op.method != "POST" else "PUT",
    ),
}


@dataclass
class Connector:
    http: httpx.AsyncClient
    graph: FakeGraph
    state_dir: Path
    clock: FakeClock

    async def send(self, call: Call) -> httpx.Response:
        return await self.http.request(
            call.method, call.target, content=call.body, headers=call.headers
        )

    def state(self) -> dict[str, Any]:
        """What a call could change: Graph's subscriptions and the calls it was sent, and every
        row of every table in the state directory."""
        files: dict[str, Any] = {}
        for path in sorted(self.state_dir.glob("*.sqlite3")):
            with sqlite3.connect(path) as db:
                tables = [
                    row[0]
                    for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                ]
                files[path.name] = {
                    table: sorted(map(repr, db.execute(f'SELECT * FROM "{table}"')))
                    for table in tables
                    if not table.startswith("sqlite_")
                }
        return {
            "subscriptions": copy.deepcopy(self.graph.subscriptions),
            "graph requests": list(self.graph.requests),
            "state": files,
        }


@pytest.fixture
async def connector(
    make_connector: Any, graph: FakeGraph, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[Connector]:
    graph.add_subscription(ROOM, expires_in=timedelta(days=1), clientState="k3Yq0pL9")
    app = create_app(make_connector())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://connector") as http:
        yield Connector(http, graph, tmp_path / "state", clock)


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 401


# Alterations that make the call one no route serves: refused before any signature is read.
NOT_ROUTED = {
    ("PUT /v1/subscriptions", "tampered path"): 404,
    ("PUT /v1/subscriptions", "method changed"): 405,
    ("PATCH /v1/subscriptions", "tampered path"): 404,
    ("PATCH /v1/subscriptions", "method changed"): 405,
    ("GET /v1/calendars/{mailbox}/events", "method changed"): 405,
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("operation", list(OPERATIONS))
async def test_a_call_not_signed_for_this_call_now_is_refused(
    connector: Connector, clock: FakeClock, operation: str, case: str
) -> None:
    before = connector.state()
    response = await connector.send(CASES[case](OPERATIONS[operation], clock))
    status = NOT_ROUTED.get((operation, case))
    if status is None:
        assert_refused(response)
    else:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
    assert connector.state() == before


@pytest.mark.parametrize("operation", list(OPERATIONS))
async def test_a_replayed_call_is_refused_and_changes_nothing(
    connector: Connector, clock: FakeClock, operation: str
) -> None:
    op = OPERATIONS[operation]
    call = signed(WEBHOOK_SECRET, clock, op.method, op.target, op.body)
    assert (await connector.send(call)).status_code == 200
    after_first = connector.state()
    clock.advance(120)
    replay = await connector.send(call)
    assert_refused(replay)
    assert "replay" in replay.json()["detail"]
    assert connector.state() == after_first


@pytest.mark.parametrize("operation", list(OPERATIONS))
async def test_the_good_calls_are_served(
    connector: Connector, clock: FakeClock, operation: str
) -> None:
    """The control: the call every case above alters is served, and reaches Graph."""
    op = OPERATIONS[operation]
    response = await connector.send(signed(WEBHOOK_SECRET, clock, op.method, op.target, op.body))
    assert response.status_code == 200, response.text
    assert connector.graph.requests
