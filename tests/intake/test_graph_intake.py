"""Alternative 1: Graph posts change and lifecycle notifications to the service."""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Connection

from bookingcache.clock import FixedClock
from bookingcache.store.sql.store import SqlStore
from bookingcache.store.sql.subscriptions import SqlSubscriptions
from tests.support.inbox import inbox_batch_rows, job_rows, stored_notifications, subscription_rows
from tests.support.samples import sample
from tests.support.tenants import Org, add_org

HANDSHAKE = (
    "Validation%3A%20Testing%20client%20application%20reachability%20for%20subscription"
    "%20Request-Id%3A%2025ba5e96-7d4f-4f7a-8a1c-2c6f1e2a9b3d"
)
DECODED = (
    "Validation: Testing client application reachability for subscription "
    "Request-Id: 25ba5e96-7d4f-4f7a-8a1c-2c6f1e2a9b3d"
)
JSON = {"Content-Type": "application/json"}


async def subscribe_samples(registry: SqlSubscriptions, org: Org) -> list[dict[str, Any]]:
    """Record the subscriptions of the sample batches for ``org``'s rooms, with the samples'
    clientStates as the tenant's current and previous (rotating) secrets."""
    notes = sample("notification-batch.json")["value"]
    lifecycle = sample("lifecycle-batch.json")["value"]
    ids = list(dict.fromkeys(n["subscriptionId"] for n in notes + lifecycle))
    for subscription_id, mailbox in zip(ids, org.mailboxes, strict=True):
        await registry.record(
            org.id, mailbox, subscription_id, expires_at=dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
        )
    states = list(dict.fromkeys(n["clientState"] for n in notes + lifecycle))
    for state in states:
        await registry.rotate_client_state(org.id, state)
    return list(notes)


def counter(app: FastAPI, name: str, **labels: str) -> float:
    registry: CollectorRegistry = app.state.metrics_registry
    return registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("url", ["/graph/notifications/contoso", "/graph/lifecycle/contoso"])
async def test_validation_handshake_echoes_the_decoded_token(
    client: httpx.AsyncClient, url: str
) -> None:
    response = await client.post(
        f"{url}?validationToken={HANDSHAKE}",
        headers={"Content-Type": "text/plain; charset=utf-8"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == DECODED


async def test_sample_batch_is_committed_before_the_202(
    client: httpx.AsyncClient, store: SqlStore, registry: SqlSubscriptions
) -> None:
    org = await add_org(store)
    await subscribe_samples(registry, org)
    body = sample("notification-batch.json")
    response = await client.post(f"/graph/notifications/{org.id}", json=body)
    assert response.status_code == 202, response.text
    notes = body["value"]
    # One inbox row for the request's round, listing both notifications.
    [row] = await inbox_batch_rows(store, org.id)
    assert (row.source, row._mapping["count"]) == ("alt1", 2)
    assert row.notifications == [
        {
            "kind": "change",
            "subscriptionId": notes[0]["subscriptionId"],
            "mailbox": org.mailboxes[0],
            "changeType": "created",
            "resource": notes[0]["resource"],
        },
        {
            "kind": "change",
            "subscriptionId": notes[1]["subscriptionId"],
            "mailbox": org.mailboxes[1],
            "changeType": "updated",
            "resource": notes[1]["resource"],
        },
    ]
    # One coalesced refresh per dirty calendar.
    assert sorted(j.mailbox for j in await job_rows(store)) == org.mailboxes[:2]


async def test_inauthentic_notifications_are_acknowledged_ignored_and_counted(
    app: FastAPI, client: httpx.AsyncClient, store: SqlStore, registry: SqlSubscriptions
) -> None:
    org = await add_org(store)
    other = await add_org(store)
    notes = await subscribe_samples(registry, org)
    await registry.record(other.id, other.mailboxes[0], "sub-of-other-tenant", expires_at=None)
    await registry.rotate_client_state(other.id, "state-of-other-tenant")
    good = notes[0]
    unknown = {**good, "subscriptionId": "never-created"}
    wrong_state = {**notes[1], "clientState": "Zr8wq1Tn-room-b3"}
    missing_state = {k: v for k, v in notes[1].items() if k != "clientState"}
    foreign = {
        **good,
        "subscriptionId": "sub-of-other-tenant",
        "clientState": "state-of-other-tenant",
    }
    body = {"value": [unknown, good, wrong_state, missing_state, foreign]}
    response = await client.post(f"/graph/notifications/{org.id}", json=body)
    assert response.status_code == 202
    stored = await stored_notifications(store)
    assert [(n.tenant_id, n.entry["mailbox"]) for n in stored] == [(org.id, org.mailboxes[0])]
    name = "bookingcache_intake_ignored_notifications_total"
    assert counter(app, name, reason="unknown_subscription") == 1
    assert counter(app, name, reason="wrong_client_state") == 2
    assert counter(app, name, reason="other_tenant") == 1
    accepted = "bookingcache_intake_accepted_notifications_total"
    assert counter(app, accepted, via="alt1") == 1


async def test_a_batch_for_an_unknown_tenant_is_acknowledged_and_stores_nothing(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    response = await client.post(
        "/graph/notifications/nobody-here", json=sample("notification-batch.json")
    )
    assert response.status_code == 202
    assert await stored_notifications(store) == []


async def test_lifecycle_events_mark_subscriptions_and_force_full_resyncs(
    client: httpx.AsyncClient, store: SqlStore, registry: SqlSubscriptions
) -> None:
    org = await add_org(store)
    await subscribe_samples(registry, org)
    response = await client.post(f"/graph/lifecycle/{org.id}", json=sample("lifecycle-batch.json"))
    assert response.status_code == 202
    notes = sample("lifecycle-batch.json")["value"]
    assert [(n.source, n.entry) for n in await stored_notifications(store, org.id)] == [
        ("alt1", {"kind": kind, "subscriptionId": note["subscriptionId"], "mailbox": mailbox})
        for kind, note, mailbox in zip(
            ["reauthorizationRequired", "missed", "subscriptionRemoved"],
            notes,
            org.mailboxes,
            strict=True,
        )
    ]
    marks = await subscription_rows(store, org.id)
    assert marks[org.mailboxes[0]].needs_action == "renew"
    assert marks[org.mailboxes[1]].needs_action == "none"
    assert marks[org.mailboxes[2]].needs_action == "recreate"
    assert {m: mark.action for m, mark in (await registry.marks(org.id)).items()} == {
        org.mailboxes[0]: "renew",
        org.mailboxes[2]: "recreate",
    }
    # reauthorizationRequired alone does not dirty the calendar; the other two resync fully.
    assert {(j.mailbox, j.kind) for j in await job_rows(store)} == {
        (org.mailboxes[1], "full_resync"),
        (org.mailboxes[2], "full_resync"),
    }


async def test_changes_and_lifecycle_events_may_share_a_batch(
    client: httpx.AsyncClient, store: SqlStore, registry: SqlSubscriptions
) -> None:
    org = await add_org(store)
    await subscribe_samples(registry, org)
    mixed = sample("notification-batch.json")["value"] + sample("lifecycle-batch.json")["value"]
    response = await client.post(f"/graph/notifications/{org.id}", json={"value": mixed})
    assert response.status_code == 202
    stored = await stored_notifications(store)
    kinds = sorted((n.entry["kind"], n.entry.get("changeType", "")) for n in stored)
    assert kinds == [
        ("change", "created"),
        ("change", "updated"),
        ("missed", ""),
        ("reauthorizationRequired", ""),
        ("subscriptionRemoved", ""),
    ]


async def test_a_rotated_client_state_verifies_until_its_grace_ends(
    client: httpx.AsyncClient, store: SqlStore, registry: SqlSubscriptions, clock: FixedClock
) -> None:
    org = await add_org(store)
    # The three sample clientStates were made current in turn: a1, b2 retire, c3 stays.
    notes = await subscribe_samples(registry, org)
    old = {"value": [notes[0]]}
    assert (await client.post(f"/graph/notifications/{org.id}", json=old)).status_code == 202
    assert len(await stored_notifications(store)) == 1
    clock.advance(dt.timedelta(hours=4, minutes=1))
    assert (await client.post(f"/graph/notifications/{org.id}", json=old)).status_code == 202
    assert len(await stored_notifications(store)) == 1  # the retired secret no longer verifies
    current = {"value": [{**notes[1], "clientState": "Pq2xY7mK-room-c3"}]}
    assert (await client.post(f"/graph/notifications/{org.id}", json=current)).status_code == 202
    assert len(await stored_notifications(store)) == 2


async def test_a_subscription_recorded_after_a_miss_is_found_at_once(
    client: httpx.AsyncClient, store: SqlStore, registry: SqlSubscriptions
) -> None:
    org = await add_org(store)
    await registry.rotate_client_state(org.id, "the-state")
    note = {"subscriptionId": "sub-new", "clientState": "the-state", "changeType": "updated"}
    await client.post(f"/graph/notifications/{org.id}", json={"value": [note]})
    assert await stored_notifications(store) == []
    await registry.record(org.id, org.mailboxes[1], "sub-new", expires_at=None)
    await client.post(f"/graph/notifications/{org.id}", json={"value": [note]})
    assert [n.entry["mailbox"] for n in await stored_notifications(store)] == [org.mailboxes[1]]


BAD_BODIES: list[tuple[bytes, dict[str, str], int]] = [
    (b"{not json", JSON, 400),
    (b"", JSON, 400),
    (b"[]", JSON, 400),
    (b'{"value": {}}', JSON, 400),
    (b'{"value": [{"subscriptionId": 7, "changeType": "updated"}]}', JSON, 400),
    (b'{"value": [{"subscriptionId": "s", "clientState": "x"}]}', JSON, 400),
    (
        b'{"value": [{"subscriptionId": "s", "changeType": "a", "lifecycleEvent": "missed"}]}',
        JSON,
        400,
    ),
    (b'{"value": [{"subscriptionId": "s\\u0000", "changeType": "updated"}]}', JSON, 400),
    (b'{"value": []}', {"Content-Type": "text/plain"}, 415),
    (b'{"value": []}', {}, 415),
]


async def test_bad_bodies_get_a_problem_and_store_nothing(
    client: httpx.AsyncClient, store: SqlStore, registry: SqlSubscriptions
) -> None:
    org = await add_org(store)
    await subscribe_samples(registry, org)
    for body, headers, status in BAD_BODIES:
        url = f"/graph/{'lifecycle' if status == 415 else 'notifications'}/{org.id}"
        response = await client.post(url, content=body, headers=headers)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["status"] == status
    assert await stored_notifications(store) == []


async def test_bodies_over_one_mebibyte_are_refused(
    client: httpx.AsyncClient, store: SqlStore, registry: SqlSubscriptions
) -> None:
    org = await add_org(store)
    notes = await subscribe_samples(registry, org)
    big = {"value": [notes[1]] * 3000}
    data = json.dumps(big).encode()
    assert len(data) > 1024 * 1024
    declared = await client.post(f"/graph/notifications/{org.id}", content=data, headers=JSON)
    assert declared.status_code == 413

    async def chunks() -> Any:
        for offset in range(0, len(data), 65536):
            yield data[offset : offset + 65536]

    streamed = await client.post(f"/graph/notifications/{org.id}", content=chunks(), headers=JSON)
    assert streamed.status_code == 413
    assert "content-length" not in {k.lower() for k in streamed.request.headers}
    assert await stored_notifications(store) == []
    # Just under the limit is fine.
    fits = {"value": [notes[1]] * 1000}
    ok = await client.post(f"/graph/notifications/{org.id}", json=fits)
    assert ok.status_code == 202
    assert len(await stored_notifications(store)) == 1000


async def refuse_inbox(store: SqlStore, *, refuse: bool = True) -> None:
    """Make the database refuse every inbox row as a full disk would (or stop doing so)."""
    if store.dialect == "sqlite":
        statements = (
            [
                "CREATE TRIGGER refuse_inbox BEFORE INSERT ON inbox_batches "
                "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            ]
            if refuse
            else ["DROP TRIGGER refuse_inbox"]
        )
    else:
        statements = (
            [
                "CREATE FUNCTION refuse_inbox() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'disk full'; END $$",
                "CREATE TRIGGER refuse_inbox BEFORE INSERT ON inbox_batches "
                "FOR EACH ROW EXECUTE FUNCTION refuse_inbox()",
            ]
            if refuse
            else ["DROP TRIGGER refuse_inbox ON inbox_batches", "DROP FUNCTION refuse_inbox()"]
        )

    def run(connection: Connection) -> None:
        for statement in statements:
            connection.execute(sa.text(statement))

    await store.transaction(run)


async def test_a_failed_commit_answers_503_so_graph_retries(
    client: httpx.AsyncClient, store: SqlStore, registry: SqlSubscriptions
) -> None:
    org = await add_org(store)
    await subscribe_samples(registry, org)
    await refuse_inbox(store)
    body = sample("notification-batch.json")
    try:
        response = await client.post(f"/graph/notifications/{org.id}", json=body)
    finally:
        await refuse_inbox(store, refuse=False)
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["retry-after"] == "1"
    assert await stored_notifications(store) == []
    assert await job_rows(store) == []  # no refresh for what was not stored
    retried = await client.post(f"/graph/notifications/{org.id}", json=copy.deepcopy(body))
    assert retried.status_code == 202
    assert len(await stored_notifications(store)) == 2


async def test_a_failed_subscription_lookup_answers_503(
    client: httpx.AsyncClient, store: SqlStore, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("breaks the database by dropping a table")
    org = await add_org(store)
    await store.transaction(
        lambda connection: connection.execute(sa.text("DROP TABLE subscriptions"))
    )
    response = await client.post(
        f"/graph/notifications/{org.id}", json=sample("notification-batch.json")
    )
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["retry-after"] == "1"
    assert await stored_notifications(store) == []
