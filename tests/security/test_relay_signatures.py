"""Signed calls into the service: the connector relay's ``POST /v1/tenants/{tenant}/notifications``
(``contract/signing.py``, ``intake/relay.py``) refuses every call whose Standard Webhooks
signature is not the tenant's, for this exact call, now, and for the first time.

One matrix, each case a call that differs from a good one in one way (the signature is made
with the Standard Webhooks library, or, for timestamps the library cannot express, with HMAC
directly, so that the timestamp alone is wrong): no signature, a wrong secret, another tenant's
signature, a stale or a future timestamp, absurd timestamps (``999999999999``, ``-1``, ``1e30``,
words), a tampered body, path or query, a replay of an accepted call, and a tenant the service
does not know. Each is refused with a 401 ``bad-signature`` problem, and the database (inbox,
jobs, replay ids, everything) is the same afterwards. A control case shows the good call is
accepted and does change it, so the matrix is not refusing everything for another reason.

The replay across two service processes, and the release of an id whose call was refused after
its signature checked, are in tests/intake/test_relay_intake.py.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, replace

import httpx
import pytest

from bookingcache.clock import FixedClock
from bookingcache.contract.signing import ReplayCache
from bookingcache.store.sql.store import SqlStore
from tests.support.signing import sign
from tests.support.snapshot import snapshot
from tests.support.tenants import Org, add_org

SKEW = dt.timedelta(minutes=6)


def raw_signature(secret: str, msg_id: str, stamp: str, content: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` over ``"{id}.{timestamp}.{content}"``, for any timestamp
    text (the library only signs real times)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{stamp}.".encode() + content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@dataclass(frozen=True)
class Call:
    target: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class World:
    org: Org
    other: Org
    now: dt.datetime

    @property
    def target(self) -> str:
        return f"/v1/tenants/{self.org.id}/notifications"

    @property
    def body(self) -> bytes:
        return json.dumps(
            {"changes": [], "lifecycle": [], "resync": [self.org.mailboxes[0]]}
        ).encode()

    def good(self) -> Call:
        return Call(
            self.target,
            self.body,
            sign(self.org.secret, "POST", self.target, self.body, at=self.now),
        )

    def stamped(self, stamp: str) -> Call:
        """A call signed correctly, but for the timestamp ``stamp``."""
        msg_id = "msg_absurd_time"
        content = f"POST {self.target}\n".encode() + self.body
        return Call(
            self.target,
            self.body,
            {
                "webhook-id": msg_id,
                "webhook-timestamp": stamp,
                "webhook-signature": raw_signature(self.org.secret, msg_id, stamp, content),
            },
        )


def _other_tenant(w: World) -> Call:
    # Tenant B's relay, correctly signed for B's own URL, aimed at tenant A.
    b_target = f"/v1/tenants/{w.other.id}/notifications"
    return Call(w.target, w.body, sign(w.other.secret, "POST", b_target, w.body, at=w.now))


def _other_tenant_for_a(w: World) -> Call:
    # Signed with B's secret over A's URL.
    return Call(w.target, w.body, sign(w.other.secret, "POST", w.target, w.body, at=w.now))


def _unknown_tenant(w: World) -> Call:
    target = "/v1/tenants/nobody/notifications"
    return Call(target, w.body, sign(w.org.secret, "POST", target, w.body, at=w.now))


def _tampered_path(w: World) -> Call:
    # Signed for A's URL with A's secret, sent to B's URL.
    return replace(w.good(), target=f"/v1/tenants/{w.other.id}/notifications")


def _tampered_query(w: World) -> Call:
    signed = f"{w.target}?batch=1"
    return Call(f"{w.target}?batch=2", w.body, sign(w.org.secret, "POST", signed, w.body, at=w.now))


CASES: dict[str, Callable[[World], Call]] = {
    "no signature": lambda w: Call(w.target, w.body, {}),
    "signature header only": lambda w: Call(
        w.target, w.body, {"webhook-signature": w.good().headers["webhook-signature"]}
    ),
    "garbage signature": lambda w: replace(
        w.good(), headers={**w.good().headers, "webhook-signature": "v1,%%%% v2,AAAA"}
    ),
    "wrong secret": lambda w: Call(
        w.target,
        w.body,
        sign("whsec_" + base64.b64encode(b"w" * 32).decode(), "POST", w.target, w.body, at=w.now),
    ),
    "other tenant's signature": _other_tenant,
    "other tenant's secret over this URL": _other_tenant_for_a,
    "unknown tenant": _unknown_tenant,
    "stale timestamp": lambda w: Call(
        w.target, w.body, sign(w.org.secret, "POST", w.target, w.body, at=w.now - SKEW)
    ),
    "future timestamp": lambda w: Call(
        w.target, w.body, sign(w.org.secret, "POST", w.target, w.body, at=w.now + SKEW)
    ),
    "timestamp 999999999999": lambda w: w.stamped("999999999999"),
    "timestamp -1": lambda w: w.stamped("-1"),
    "timestamp 1e30": lambda w: w.stamped("1e30"),
    "timestamp in words": lambda w: w.stamped("tomorrow"),
    "timestamp in milliseconds": lambda w: w.stamped(str(int(w.now.timestamp() * 1000))),
    "tampered body": lambda w: replace(
        w.good(),
        body=json.dumps({"changes": [], "lifecycle": [], "resync": [w.org.mailboxes[1]]}).encode(),
    ),
    "tampered path": _tampered_path,
    "tampered query": _tampered_query,
}


async def post(client: httpx.AsyncClient, call: Call) -> httpx.Response:
    headers = {**call.headers, "Content-Type": "application/json"}
    return await client.post(call.target, content=call.body, headers=headers)


@pytest.fixture
async def world(store: SqlStore, clock: FixedClock) -> World:
    return World(org=await add_org(store), other=await add_org(store), now=clock.now())


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith("bad-signature")
    assert response.headers["x-request-id"]  # every answer, a refusal too


@pytest.mark.parametrize("case", list(CASES))
async def test_a_call_not_signed_by_the_tenant_for_this_call_now_is_refused(
    client: httpx.AsyncClient, store: SqlStore, world: World, case: str
) -> None:
    before = await snapshot(store)
    response = await post(client, CASES[case](world))
    assert_refused(response)
    assert await snapshot(store) == before


async def test_a_replayed_call_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, store: SqlStore, world: World, clock: FixedClock
) -> None:
    call = world.good()
    assert (await post(client, call)).status_code == 202
    after_first = await snapshot(store)
    clock.advance(dt.timedelta(minutes=2))
    replay = await post(client, call)
    assert_refused(replay)
    assert "replay" in replay.json()["detail"]
    assert await snapshot(store) == after_first


async def test_the_good_call_is_accepted_and_stored(
    client: httpx.AsyncClient, store: SqlStore, world: World
) -> None:
    """The control: the call every case above alters is accepted and reaches the inbox."""
    before = await snapshot(store)
    response = await post(client, world.good())
    assert response.status_code == 202, response.text
    after = await snapshot(store)
    assert after["inbox_batches"] != before["inbox_batches"]
    assert after["jobs"] != before["jobs"]


async def test_an_unknown_tenant_hears_what_a_wrong_signature_hears(
    client: httpx.AsyncClient, world: World
) -> None:
    """An unsigned caller cannot learn which tenants exist."""
    unknown = await post(client, _unknown_tenant(world))
    wrong = await post(client, CASES["wrong secret"](world))
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json()["detail"] == wrong.json()["detail"]
    assert "nobody" not in unknown.json()["detail"]


def test_the_replay_cache_refuses_an_id_inside_the_window_and_forgets_old_ones() -> None:
    cache = ReplayCache()
    start = dt.datetime(2026, 3, 29, 0, 30, tzinfo=dt.UTC)
    assert cache.reserve("t", "msg-0", sent_at=start, now=start)
    assert not cache.reserve("t", "msg-0", sent_at=start, now=start + dt.timedelta(minutes=4))
    assert cache.reserve("u", "msg-0", sent_at=start, now=start)  # another tenant's id
    # 100 calls a second for ten minutes: ids older than the window are dropped as it goes.
    for number in range(1, 60_000):
        at = start + dt.timedelta(milliseconds=10 * number)
        assert cache.reserve("t", f"msg-{number}", sent_at=at, now=at)
    assert len(cache) <= 30_000 + 100 + 2
    later = start + dt.timedelta(minutes=10)
    assert not cache.reserve("t", "msg-59999", sent_at=later, now=later)
    assert cache.reserve("t", "msg-0", sent_at=later, now=later)  # its first use left the window
