"""Alternative 2: the connector relay's signed call. Its refusals of calls not signed by the
tenant for this call, now, for the first time are the matrix in
tests/security/test_relay_signatures.py."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from bookingcache.bootstrap import service_app
from bookingcache.clock import FixedClock
from bookingcache.domain.tenancy import EventSource
from bookingcache.settings import Settings
from bookingcache.store.sql.schema import calendars
from bookingcache.store.sql.store import SqlStore
from bookingcache.store.sql.subscriptions import SqlSubscriptions
from tests.support.inbox import event_count, job_rows, stored_notifications, subscription_rows
from tests.support.relay import wire_event
from tests.support.signing import sign
from tests.support.tenants import Org, add_org

from .test_graph_intake import counter

START = "2026-11-23T00:00:00Z"
END = "2026-12-07T00:00:00Z"


def change(mailbox: str, change_type: str = "updated") -> dict[str, str]:
    return {"mailbox": mailbox, "subscriptionId": f"sub-of-{mailbox}", "changeType": change_type}


def call(
    *,
    changes: list[dict[str, str]] | None = None,
    lifecycle: list[dict[str, str]] | None = None,
    resync: list[str] | None = None,
    windows: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A relay call as the connector sends it: the three lists always, windows if any."""
    body: dict[str, Any] = {
        "changes": changes or [],
        "lifecycle": lifecycle or [],
        "resync": resync or [],
    }
    if windows is not None:
        body["windows"] = windows
    return body


async def post_signed(
    client: httpx.AsyncClient,
    org: Org,
    payload: Any,
    *,
    clock: FixedClock,
    secret: str | None = None,
    at: dt.datetime | None = None,
    msg_id: str | None = None,
    path_tenant: str | None = None,
) -> httpx.Response:
    target = f"/v1/tenants/{path_tenant or org.id}/notifications"
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = sign(secret or org.secret, "POST", target, body, at=at or clock.now(), msg_id=msg_id)
    headers["Content-Type"] = "application/json"
    return await client.post(target, content=body, headers=headers)


async def test_changes_lifecycle_and_resync_reach_the_inbox(
    client: httpx.AsyncClient, store: SqlStore, registry: SqlSubscriptions, clock: FixedClock
) -> None:
    org = await add_org(store)
    await registry.record(org.id, org.mailboxes[2], "sub-2", expires_at=None)
    payload = {
        "changes": [
            {"mailbox": org.mailboxes[0], "subscriptionId": "sub-0", "changeType": "updated"},
            # Mailboxes are compared without case, and stored as the room links them.
            {
                "mailbox": org.mailboxes[0].upper(),
                "subscriptionId": "sub-0",
                "changeType": "created",
            },
        ],
        "lifecycle": [
            {
                "mailbox": org.mailboxes[2],
                "subscriptionId": "sub-2",
                "lifecycleEvent": "subscriptionRemoved",
            }
        ],
        "resync": [org.mailboxes[1]],
    }
    response = await post_signed(client, org, payload, clock=clock)
    assert response.status_code == 202, response.text
    stored = await stored_notifications(store, org.id)
    assert {n.source for n in stored} == {"alt2"}
    assert [n.entry for n in stored] == [
        {
            "kind": "change",
            "subscriptionId": "sub-0",
            "mailbox": org.mailboxes[0],
            "changeType": "updated",
        },
        {
            "kind": "change",
            "subscriptionId": "sub-0",
            "mailbox": org.mailboxes[0],
            "changeType": "created",
        },
        {"kind": "subscriptionRemoved", "subscriptionId": "sub-2", "mailbox": org.mailboxes[2]},
        {"kind": "resync", "mailbox": org.mailboxes[1]},
    ]
    assert {(j.mailbox, j.kind) for j in await job_rows(store)} == {
        (org.mailboxes[0], "refresh"),
        (org.mailboxes[1], "full_resync"),
        (org.mailboxes[2], "full_resync"),
    }
    assert (await subscription_rows(store, org.id))[org.mailboxes[2]].needs_action == "recreate"


async def test_pushed_windows_replace_the_cached_window(
    client: httpx.AsyncClient, store: SqlStore, clock: FixedClock
) -> None:
    org = await add_org(store, source=EventSource.PUSH, connector_url=None)
    window = {
        "mailbox": org.mailboxes[0],
        "start": START,
        "end": END,
        "events": [
            wire_event("e1", "2026-11-23T10:00:00Z", "2026-11-23T11:00:00Z"),
            wire_event(
                "e2", "2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z", isAllDay=True, showAs="oof"
            ),
        ],
    }
    payload = call(changes=[change(org.mailboxes[0])], windows=[window])
    response = await post_signed(client, org, payload, clock=clock)
    assert response.status_code == 202, response.text
    cached = await store.events_in_window(
        org.id,
        [org.mailboxes[0]],
        start=dt.datetime(2026, 11, 23, tzinfo=dt.UTC),
        end=dt.datetime(2026, 12, 7, tzinfo=dt.UTC),
    )
    assert [(e.id, e.show_as.value, e.is_all_day) for e in cached[org.mailboxes[0]]] == [
        ("e1", "busy", False),
        ("e2", "oof", True),
    ]
    calendar = await store.get_calendar(org.id, org.mailboxes[0])
    assert calendar.last_success_at == clock.now()
    # The next push replaces the window: e1 was cancelled and removed.
    window["events"] = window["events"][1:]
    again = await post_signed(client, org, call(windows=[window]), clock=clock)
    assert again.status_code == 202
    assert await event_count(store) == 1


async def test_windows_of_a_tenant_that_reads_its_connector_are_not_applied(
    client: httpx.AsyncClient, store: SqlStore, clock: FixedClock
) -> None:
    org = await add_org(store)
    window = {
        "mailbox": org.mailboxes[0],
        "start": START,
        "end": END,
        "events": [wire_event("e1", "2026-11-23T10:00:00Z", "2026-11-23T11:00:00Z")],
    }
    payload = call(changes=[change(org.mailboxes[0])], windows=[window])
    assert (await post_signed(client, org, payload, clock=clock)).status_code == 202
    assert await event_count(store) == 0
    assert len(await stored_notifications(store)) == 1


async def test_failed_signatures_from_one_address_are_throttled_but_a_signed_call_is_not(
    app: FastAPI, client: httpx.AsyncClient, store: SqlStore, clock: FixedClock
) -> None:
    org = await add_org(store)
    other = await add_org(store)
    payload = {"changes": [], "lifecycle": [], "resync": [org.mailboxes[0]]}
    # The documented default: 20 failures from one address, then 429 until one is back.
    for _ in range(20):
        response = await post_signed(client, org, payload, clock=clock, secret=other.secret)
        assert response.status_code == 401, response.text
    throttled = await post_signed(client, org, payload, clock=clock, secret=other.secret)
    assert throttled.status_code == 429, throttled.text
    assert throttled.headers["content-type"].startswith("application/problem+json")
    assert throttled.json()["type"] == "urn:bookingcache:problem:too-many-failed-attempts"
    assert throttled.headers["retry-after"] == "3"
    assert counter(app, "bookingcache_auth_throttled_total", scope="address") == 1
    # The tenant's relay, from that same address, correctly signed: accepted.
    accepted = await post_signed(client, org, payload, clock=clock)
    assert accepted.status_code == 202, accepted.text
    assert len(await stored_notifications(store)) == 1
    clock.advance(dt.timedelta(seconds=3))
    again = await post_signed(client, org, payload, clock=clock, secret=other.secret)
    assert again.status_code == 401, again.text


@contextlib.asynccontextmanager
async def another_process(
    settings: Settings, clock: FixedClock
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a second service app on the same database, as another process would be."""
    other = service_app(settings, clock=clock)
    async with other.router.lifespan_context(other):
        transport = httpx.ASGITransport(app=other, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://other") as client:
            yield client


async def test_a_call_accepted_by_one_process_is_a_replay_at_another(
    client: httpx.AsyncClient, settings: Settings, store: SqlStore, clock: FixedClock
) -> None:
    """Two service processes on one database (a second app here): the webhook-id one of them
    accepted is refused by the other inside the window, and its notification is stored once."""
    org = await add_org(store)
    target = f"/v1/tenants/{org.id}/notifications"
    body = json.dumps(call(resync=[org.mailboxes[0]])).encode()
    headers = {
        **sign(org.secret, "POST", target, body, at=clock.now()),
        "Content-Type": "application/json",
    }
    async with another_process(settings, clock) as second:
        assert (await client.post(target, content=body, headers=headers)).status_code == 202
        clock.advance(dt.timedelta(minutes=2))
        replay = await second.post(target, content=body, headers=headers)
        assert replay.status_code == 401, replay.text
        assert "replay" in replay.json()["detail"]
        # Past the window the timestamp itself is refused, whoever receives it.
        clock.advance(dt.timedelta(minutes=4))
        late = await second.post(target, content=body, headers=headers)
        assert late.status_code == 401
        assert "5 minutes" in late.json()["detail"]
    assert len(await stored_notifications(store)) == 1


@pytest.mark.parametrize("resend_to", ["the same process", "another process"])
async def test_a_call_refused_after_its_signature_checked_may_be_sent_again(
    client: httpx.AsyncClient,
    settings: Settings,
    store: SqlStore,
    clock: FixedClock,
    resend_to: str,
) -> None:
    """Its webhook-id is released in this process and in the table every process shares."""
    org = await add_org(store)
    target = f"/v1/tenants/{org.id}/notifications"
    body = json.dumps(call(resync=[org.mailboxes[0]])).encode()
    headers = sign(org.secret, "POST", target, body, at=clock.now())
    refused = await client.post(
        target, content=body, headers={**headers, "Content-Type": "text/plain"}
    )
    assert refused.status_code == 415
    async with contextlib.AsyncExitStack() as stack:
        resender = client
        if resend_to == "another process":
            resender = await stack.enter_async_context(another_process(settings, clock))
        accepted = await resender.post(
            target, content=body, headers={**headers, "Content-Type": "application/json"}
        )
        assert accepted.status_code == 202, accepted.text
    assert len(await stored_notifications(store)) == 1


async def test_mailboxes_that_are_not_the_tenants_calendars_are_ignored_and_named(
    client: httpx.AsyncClient, app: FastAPI, store: SqlStore, clock: FixedClock
) -> None:
    """A room unlinked since Graph notified, or another tenant's mailbox: those parts are
    acknowledged and ignored (refusing the call would make the relay resend it forever), the
    rest is applied, and another tenant's data is never touched."""
    org = await add_org(store, source=EventSource.PUSH, connector_url=None)
    other = await add_org(store)
    window = {
        "mailbox": org.mailboxes[0],
        "start": START,
        "end": END,
        "events": [wire_event("e1", "2026-11-23T10:00:00Z", "2026-11-23T11:00:00Z")],
    }
    foreign_window = {**window, "mailbox": other.mailboxes[1]}
    payload = call(
        changes=[change(org.mailboxes[1]), change(other.mailboxes[0])],
        lifecycle=[
            {"mailbox": "gone@example.com", "subscriptionId": "gone", "lifecycleEvent": "missed"}
        ],
        resync=["nobody@example.com", org.mailboxes[2]],
        windows=[window, foreign_window],
    )
    response = await post_signed(client, org, payload, clock=clock)
    assert response.status_code == 202, response.text
    assert response.json() == {
        "notifications": 2,
        "windowsApplied": 1,
        "ignoredMailboxes": sorted(
            [other.mailboxes[0], other.mailboxes[1], "gone@example.com", "nobody@example.com"]
        ),
    }
    stored = await stored_notifications(store)
    assert [(n.tenant_id, n.entry["mailbox"], n.entry["kind"]) for n in stored] == [
        (org.id, org.mailboxes[1], "change"),
        (org.id, org.mailboxes[2], "resync"),
    ]
    assert await event_count(store) == 1  # the tenant's own window, nothing of the other's
    ignored = counter(
        app, "bookingcache_intake_ignored_notifications_total", reason="unknown_mailbox"
    )
    assert ignored == 4  # one change, one lifecycle event, one resync, one window


BAD_WINDOWS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({}, {"start": "2026-11-23T25:00:00Z"}),
    ({}, {"start": "2026-11-23T10:00:00"}),  # no offset: ambiguous
    ({}, {"end": "2026-11-23T09:00:00Z"}),  # ends before it starts
    ({}, {"showAs": "maybe"}),
    ({}, {"isAllDay": "sometimes"}),
    ({}, {"start": "9999-12-31T23:00:00-05:00"}),
    ({}, {"subject": "a\u0000b"}),
    ({"end": "2026-11-22T00:00:00Z"}, {}),
    ({"start": "yesterday"}, {}),
    ({"end": "2027-11-22T00:00:00Z"}, {}),
]


async def test_invalid_pushed_windows_get_422_and_store_nothing(
    client: httpx.AsyncClient, store: SqlStore, clock: FixedClock
) -> None:
    org = await add_org(store, source=EventSource.PUSH, connector_url=None)
    good = {
        "mailbox": org.mailboxes[0],
        "start": START,
        "end": END,
        "events": [wire_event("ok", "2026-11-23T08:00:00Z", "2026-11-23T09:00:00Z")],
    }
    for window_change, event_change in BAD_WINDOWS:
        bad = {
            "mailbox": org.mailboxes[1],
            "start": START,
            "end": END,
            "events": [
                {**wire_event("e1", "2026-11-23T10:00:00Z", "2026-11-23T11:00:00Z"), **event_change}
            ],
            **window_change,
        }
        payload = call(changes=[change(org.mailboxes[0])], windows=[good, bad])
        response = await post_signed(client, org, payload, clock=clock)
        assert response.status_code == 422, (window_change, event_change, response.text)
        assert response.json()["errors"]
    assert await event_count(store) == 0
    assert await stored_notifications(store) == []
    async with store.read() as connection:
        synced = await connection.scalar(
            sa.select(sa.func.count()).where(calendars.c.last_success_at.is_not(None))
        )
    assert synced == 0


MALFORMED: list[tuple[bytes, int]] = [
    (b"{nope", 400),
    (b'"just a string"', 422),
    (b'{"changes": {"mailbox": "x"}}', 422),
    (b'{"changes": [{"changeType": "updated"}]}', 422),
    (b'{"lifecycle": [{"mailbox": "m", "lifecycleEvent": "exploded"}]}', 422),
    (b'{"resync": [1, 2]}', 422),
]


async def test_malformed_relay_bodies(
    client: httpx.AsyncClient, store: SqlStore, clock: FixedClock
) -> None:
    org = await add_org(store)
    for body, status in MALFORMED:
        response = await post_signed(client, org, body, clock=clock)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    assert await stored_notifications(store) == []
