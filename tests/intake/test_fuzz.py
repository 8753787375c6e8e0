"""Generated payloads against both intake endpoints: only clear answers, never a 500, and
nothing stored from a refused request."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from bookingcache.clock import FixedClock
from bookingcache.domain.tenancy import EventSource
from bookingcache.settings import Settings
from bookingcache.store.sql.schema import events, inbox_batches
from bookingcache.store.sql.store import SqlStore
from bookingcache.store.sql.subscriptions import SqlSubscriptions
from tests.support.samples import sample
from tests.support.signing import sign
from tests.support.tenants import Org, add_org

ALLOWED = {202, 400, 401, 413, 415, 422}
FUZZ = examples(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
odd = st.one_of(
    json_values,
    st.text(max_size=30),
    st.sampled_from(["", "\u0000", "updated", "missed", "2026-02-30T10:00:00Z", "x" * 400]),
)


@dataclass
class Fixture:
    org: Org
    subscriptions: list[str]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Unthrottled failures: the examples send badly signed calls by the dozen, from one address
    and with the clock standing still, and each must get its own 401. The throttle those calls
    would meet is tested in tests/api/test_auth_throttle.py."""
    return settings.model_copy(update={"auth_failure_burst": 1_000_000})


@pytest.fixture
async def fuzz(store: SqlStore, registry: SqlSubscriptions) -> Fixture:
    org = await add_org(store, source=EventSource.PUSH, connector_url=None)
    notes = sample("notification-batch.json")["value"]
    ids = [note["subscriptionId"] for note in notes]
    for subscription_id, mailbox in zip(ids, org.mailboxes, strict=False):
        await registry.record(org.id, mailbox, subscription_id, expires_at=None)
    for note in notes:
        await registry.rotate_client_state(org.id, note["clientState"])
    return Fixture(org, ids)


async def counts(store: SqlStore) -> tuple[int, int, int]:
    """Inbox rows, the notifications they hold, cached events."""
    async with store.read() as connection:
        rows, stored = (
            await connection.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(inbox_batches.c.count), 0))
            )
        ).one()
        cached = await connection.scalar(sa.select(sa.func.count()).select_from(events))
    return int(rows), int(stored), int(cached or 0)


@st.composite
def near_notifications(draw: st.DrawFn) -> Any:
    """Samples of Graph's batch with fields dropped, retyped or replaced."""
    notes = [dict(note) for note in sample("notification-batch.json")["value"]]
    notes += [dict(note) for note in sample("lifecycle-batch.json")["value"]]
    chosen = draw(st.lists(st.sampled_from(notes), min_size=0, max_size=4))
    batch = []
    for note in chosen:
        note = dict(note)
        for key in draw(st.lists(st.sampled_from(sorted(note)), max_size=2, unique=True)):
            if draw(st.booleans()):
                del note[key]
            else:
                note[key] = draw(odd)
        batch.append(note)
    shape = draw(st.sampled_from(["value", "bare", "other"]))
    if shape == "bare":
        return batch
    return {"value": batch} if shape == "value" else {draw(st.text(max_size=5)): batch}


@st.composite
def near_relay_calls(draw: st.DrawFn) -> Any:
    mailbox = draw(st.sampled_from(["room-0", "room-1", "nobody@example.com"]))
    pushed = {
        "id": draw(st.sampled_from(["e1", "", "\u0000"]) | st.text(max_size=5)),
        "start": draw(st.sampled_from(["2026-11-23T10:00:00Z", "2026-11-23T10:00:00", "nope"])),
        "end": draw(
            st.sampled_from(
                ["2026-11-23T11:00:00Z", "2026-11-23T09:00:00Z", "9999-12-31T23:59:59-05:00"]
            )
        ),
        "isAllDay": draw(st.booleans() | odd),
        "showAs": draw(st.sampled_from(["busy", "free", "tentative", "maybe"]) | odd),
        "subject": draw(st.none() | st.text(max_size=10)),
    }
    window = {
        "mailbox": mailbox,
        "start": draw(st.sampled_from(["2026-11-23T00:00:00Z", "2026-11-24T00:00:00Z", "bad"])),
        "end": "2026-12-07T00:00:00Z",
        "events": [pushed],
    }
    call: dict[str, Any] = {
        "changes": [{"mailbox": mailbox, "changeType": draw(odd)}],
        "lifecycle": [
            {"mailbox": mailbox, "lifecycleEvent": draw(st.sampled_from(["missed", "bad"]))}
        ],
        "resync": [draw(st.sampled_from([mailbox, 3]))],
        "windows": [window],
    }
    for key in draw(st.lists(st.sampled_from(sorted(call)), max_size=3, unique=True)):
        if draw(st.booleans()):
            del call[key]
        else:
            call[key] = draw(odd)
    return call


def as_body(draw_payload: Any) -> bytes:
    return json.dumps(draw_payload).encode()


@FUZZ
@given(
    payload=st.one_of(near_notifications(), json_values).map(as_body) | st.binary(max_size=60),
    url=st.sampled_from(["notifications", "lifecycle"]),
    content_type=st.sampled_from(
        ["application/json", "application/json; charset=utf-8", "text/plain"]
    ),
)
async def test_graph_endpoints_answer_clearly(
    client: httpx.AsyncClient,
    store: SqlStore,
    fuzz: Fixture,
    payload: bytes,
    url: str,
    content_type: str,
) -> None:
    before = await counts(store)
    response = await client.post(
        f"/graph/{url}/{fuzz.org.id}", content=payload, headers={"Content-Type": content_type}
    )
    event(f"status {response.status_code}")
    assert response.status_code in ALLOWED, response.text
    if response.status_code != 202:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert await counts(store) == before


@FUZZ
@given(
    call=st.one_of(near_relay_calls(), json_values),
    signing=st.sampled_from(["good", "good", "good", "none", "stale", "garbage"]),
)
async def test_relay_endpoint_answers_clearly(
    client: httpx.AsyncClient,
    store: SqlStore,
    fuzz: Fixture,
    clock: FixedClock,
    call: Any,
    signing: str,
) -> None:
    org = fuzz.org
    call = json.loads(
        json.dumps(call).replace("room-0", org.mailboxes[0]).replace("room-1", org.mailboxes[1])
    )
    body = json.dumps(call).encode()
    target = f"/v1/tenants/{org.id}/notifications"
    headers = sign(org.secret, "POST", target, body, at=clock.now())
    if signing == "none":
        headers = {}
    elif signing == "stale":
        headers = sign(org.secret, "POST", target, body, at=clock.now() - dt.timedelta(hours=1))
    elif signing == "garbage":
        headers["webhook-signature"] = "v1,###, v2 x"
    headers["Content-Type"] = "application/json"
    before = await counts(store)
    response = await client.post(target, content=body, headers=headers)
    event(f"status {response.status_code}")
    assert response.status_code in ALLOWED, response.text
    if response.status_code != 202:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert await counts(store) == before
    if signing != "good":
        assert response.status_code == 401
