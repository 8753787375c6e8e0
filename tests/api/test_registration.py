"""``POST /v1/tenants/{tenant}/subscriptions:register``: the subscriptions a customer made with
the connector's script, registered with the admin token or signed with the tenant's secret;
then their notifications are accepted, their expiry is tracked, and converging leaves them be."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from bookingcache.api.deps import services_of
from bookingcache.clock import FixedClock
from tests.support.api import tenant_body
from tests.support.auth import ADMIN, bearer
from tests.support.problems import assert_problem
from tests.support.signing import sign

TENANT = "fabrikam"
ROOMS = ["room-a@fabrikam.example", "room-b@fabrikam.example"]
CLIENT_STATE = "9f8e7d6c5b4a39281706f5e4d3c2b1a0-script-made"
REGISTER = f"/v1/tenants/{TENANT}/subscriptions:register"


@pytest.fixture
async def created(client: httpx.AsyncClient) -> dict[str, Any]:
    """A tenant whose events the service reads with its own Graph app and which has no
    connector to converge through, with two linked rooms."""
    answer = await client.post(
        "/v1/tenants",
        json=tenant_body(
            TENANT,
            event_source="graph",
            connector_url=None,
            graph={
                "directory_tenant": "fabrikam.example",
                "client_id": "2b3c4d5e-6f70-4a81-9b2c-3d4e5f607182",
                "client_secret": "fabrikam-graph-app-secret",
            },
        ),
        headers=ADMIN,
    )
    assert answer.status_code == 201, answer.text
    for index, mailbox in enumerate(ROOMS):
        linked = await client.put(
            f"/v1/tenants/{TENANT}/rooms/r{index}",
            json={"mailbox": mailbox, "name": f"Room {index}"},
            headers=ADMIN,
        )
        assert linked.status_code == 201, linked.text
    body: dict[str, Any] = answer.json()
    return body


def registration(expiry: dt.datetime, *mailboxes: str, state: str = CLIENT_STATE) -> dict[str, Any]:
    return {
        "clientState": state,
        "subscriptions": [
            {
                "id": f"sub-{mailbox.casefold()}",
                "mailbox": mailbox,
                "expirationDateTime": expiry.isoformat().replace("+00:00", "Z"),
            }
            for mailbox in mailboxes
        ],
    }


def signed(secret: str, body: dict[str, Any], at: dt.datetime, **kw: Any) -> dict[str, Any]:
    content = json.dumps(body).encode()
    headers = sign(secret, "POST", kw.pop("target", REGISTER), content, at=at, **kw)
    return {"content": content, "headers": {**headers, "Content-Type": "application/json"}}


async def health(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    answer = await client.get(f"/v1/tenants/{TENANT}/subscriptions", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return {row["mailbox"]: row for row in answer.json()["calendars"]}


ACCEPTED = "bookingcache_intake_accepted_notifications_total"
IGNORED = "bookingcache_intake_ignored_notifications_total"


def counter(app: FastAPI, name: str, **labels: str) -> float:
    registry: CollectorRegistry = app.state.metrics_registry
    return registry.get_sample_value(name, labels) or 0.0


def notification(subscription_id: str, state: str) -> dict[str, Any]:
    return {
        "value": [
            {
                "subscriptionId": subscription_id,
                "subscriptionExpirationDateTime": "2026-01-10T08:00:00+00:00",
                "changeType": "updated",
                "resource": "Users/6b0e8d1c-2a3f-4b5c-9d8e-7f6a5b4c3d2e/Events/AAMkAG=",
                "clientState": state,
                "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
            }
        ]
    }


async def test_registered_subscriptions_are_tracked_and_their_notifications_accepted(
    client: httpx.AsyncClient, created: dict[str, Any], clock: FixedClock, app: FastAPI
) -> None:
    expiry = clock.now() + dt.timedelta(days=6, hours=23)
    # Before registration, Graph's notifications of these subscriptions are unknown ones.
    before = await client.post(
        f"/graph/notifications/{TENANT}", json=notification("sub-room-a@fabrikam.example", "x")
    )
    assert before.status_code == 202
    assert (await health(client))["room-a@fabrikam.example"]["subscription_id"] is None

    # The mailbox is matched without case and answered in the calendar's spelling.
    answer = await client.post(
        REGISTER, json=registration(expiry, "room-a@fabrikam.example", "ROOM-B@fabrikam.example")
    )
    assert answer.status_code == 401  # no token, no signature
    answer = await client.post(
        REGISTER,
        json=registration(expiry, "room-a@fabrikam.example", "ROOM-B@fabrikam.example"),
        headers=ADMIN,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["refreshed"] == 2
    assert [(r["mailbox"], r["subscription_id"]) for r in answer.json()["subscriptions"]] == [
        ("room-a@fabrikam.example", "sub-room-a@fabrikam.example"),
        ("room-b@fabrikam.example", "sub-room-b@fabrikam.example"),
    ]
    rows = await health(client)
    assert {m: (r["subscription_id"], r["state"]) for m, r in rows.items()} == {
        "room-a@fabrikam.example": ("sub-room-a@fabrikam.example", "healthy"),
        "room-b@fabrikam.example": ("sub-room-b@fabrikam.example", "healthy"),
    }
    assert dt.datetime.fromisoformat(rows["room-a@fabrikam.example"]["expires_at"]) == expiry
    services = services_of(app)
    assert await services.subscriptions.current_client_state(TENANT) == CLIENT_STATE

    # Graph's notification with the registered clientState is accepted; a wrong one is not.
    for state, reason in ((CLIENT_STATE, None), ("guessed", "wrong_client_state")):
        accepted = counter(app, ACCEPTED, via="alt1")
        ignored = counter(app, IGNORED, reason=reason or "")
        answer = await client.post(
            f"/graph/notifications/{TENANT}",
            json=notification("sub-room-a@fabrikam.example", state),
        )
        assert answer.status_code == 202, answer.text
        if reason is None:
            assert counter(app, ACCEPTED, via="alt1") == accepted + 1
        else:
            assert counter(app, IGNORED, reason=reason) == ignored + 1
            assert counter(app, ACCEPTED, via="alt1") == accepted

    # Converging a tenant without a connector keeps what the customer registered.
    converged = await client.post(f"/v1/tenants/{TENANT}/subscriptions:converge", headers=ADMIN)
    assert converged.json()["error"] == "connector-not-configured"
    assert (await health(client))["room-b@fabrikam.example"]["state"] == "healthy"

    # Close to its end the subscription reads expiring; registered again after a renewal,
    # the new expiry counts.
    clock.advance(dt.timedelta(days=6, hours=12))
    assert (await health(client))["room-a@fabrikam.example"]["state"] == "expiring"
    renewed = clock.now() + dt.timedelta(days=6, hours=23)
    again = await client.post(REGISTER, json=registration(renewed, *ROOMS), headers=ADMIN)
    assert again.status_code == 200, again.text
    assert again.json()["refreshed"] == 0  # the same subscriptions: nothing new to read
    rows = await health(client)
    assert rows["room-a@fabrikam.example"]["state"] == "healthy"
    assert dt.datetime.fromisoformat(rows["room-a@fabrikam.example"]["expires_at"]) == renewed


async def test_the_connector_may_send_it_signed_with_the_tenant_secret(
    client: httpx.AsyncClient, created: dict[str, Any], clock: FixedClock
) -> None:
    secret = created["secrets"]["signing_secret"]
    body = registration(clock.now() + dt.timedelta(days=3), ROOMS[0])
    call = signed(secret, body, clock.now())
    answer = await client.post(REGISTER, **call)
    assert answer.status_code == 200, answer.text
    assert (await health(client))[ROOMS[0]]["subscription_id"] == "sub-room-a@fabrikam.example"
    # The same call again is a replay.
    assert_problem(await client.post(REGISTER, **call), 401)
    # The audit log names the tenant's signature as who registered, not an admin token.
    audit = await client.get("/v1/audit", params={"tenant": TENANT, "limit": 1}, headers=ADMIN)
    entry = audit.json()["entries"][0]
    assert (entry["action"], entry["actor"]) == (
        "subscriptions.register",
        f"tenant-signature:{TENANT}",
    )
    assert entry["details"] == {"subscriptions": 1, "new": 1}
    assert secret not in audit.text


@pytest.mark.parametrize("wrong", ["stale", "other secret", "other tenant", "tampered"])
async def test_a_wrongly_signed_registration_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, created: dict[str, Any], clock: FixedClock, wrong: str
) -> None:
    secret = created["secrets"]["signing_secret"]
    body = registration(clock.now() + dt.timedelta(days=3), ROOMS[0])
    at = clock.now()
    if wrong == "stale":
        call = signed(secret, body, at - dt.timedelta(minutes=6))
    elif wrong == "other secret":
        call = signed("whsec_" + "b3RoZXItc2VjcmV0LW9mLTMyLWJ5dGVzLWxvbmctLS0=", body, at)
    elif wrong == "other tenant":
        call = signed(secret, body, at, target="/v1/tenants/other/subscriptions:register")
    else:
        call = signed(secret, body, at)
        call["content"] = call["content"].replace(b"sub-room-a", b"sub-room-x")
    answer = await client.post(REGISTER, **call)
    assert_problem(answer, 401)
    assert answer.json()["type"].endswith("bad-signature")
    assert (await health(client))[ROOMS[0]]["subscription_id"] is None


async def test_a_read_token_may_not_register(
    client: httpx.AsyncClient, created: dict[str, Any], clock: FixedClock
) -> None:
    body = registration(clock.now() + dt.timedelta(days=3), ROOMS[0])
    token = created["secrets"]["read_token"]
    assert_problem(await client.post(REGISTER, json=body, headers=bearer(token)), 403)


async def test_an_unknown_mailbox_registers_nothing(
    client: httpx.AsyncClient, created: dict[str, Any], clock: FixedClock, app: FastAPI
) -> None:
    body = registration(clock.now() + dt.timedelta(days=3), ROOMS[0], "ceo@fabrikam.example")
    answer = await client.post(REGISTER, json=body, headers=ADMIN)
    assert_problem(answer, 422)
    assert [e["field"] for e in answer.json()["errors"]] == ["body.subscriptions.1.mailbox"]
    assert (await health(client))[ROOMS[0]]["subscription_id"] is None
    assert await services_of(app).subscriptions.current_client_state(TENANT) is None
    for bad in (
        {**body, "clientState": "a\u0000b"},
        # PostgreSQL cannot even look up a text holding a NUL: refused before the store.
        {**body, "subscriptions": [{**body["subscriptions"][0], "mailbox": "r\u0000@x.example"}]},
        {**body, "subscriptions": [{**body["subscriptions"][0], "id": "sub\u0000"}]},
        {**body, "subscriptions": []},
        {**body, "extra": 1},
        {"clientState": "s", "subscriptions": [{"id": "x", "mailbox": ROOMS[0]}]},
    ):
        assert_problem(await client.post(REGISTER, json=bad, headers=ADMIN), 422)
    assert_problem(
        await client.post(
            "/v1/tenants/nobody/subscriptions:register",
            json=registration(clock.now(), ROOMS[0]),
            headers=ADMIN,
        ),
        404,
    )
