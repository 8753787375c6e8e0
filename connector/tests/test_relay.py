from __future__ import annotations

import asyncio
import copy
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bookingcache_connector import cadence
from bookingcache_connector.app import create_app
from bookingcache_connector.bootstrap import Connector
from bookingcache_connector.events import BASIC_FIELDS, TitlePolicy
from bookingcache_connector.relay import Relay
from bookingcache_connector.service import ServiceClient
from bookingcache_connector.signing import Signer
from bookingcache_connector.store import StateStore
from bookingcache_connector.subscriptions import Desired

from .conftest import WEBHOOK_SECRET
from .fakes import FakeClock, FakeGraph, sample
from .receiver import Receiver

BATCH = sample("notification-batch.json")
LIFECYCLE = sample("lifecycle-batch.json")
A1, B2, C3 = "room-a1@contoso.example", "room-b2@contoso.example", "room-c3@contoso.example"


def known_subscriptions(graph: FakeGraph) -> None:
    """The sample notifications' subscription ids, as this app's listing shows them."""
    for sub_id, mailbox, state in [
        ("8c1f2a9e-5b3d-4e8f-9a7c-1d2e3f4a5b6c", A1, "k3Yq0pL9-room-a1"),
        ("0d4e5f6a-7b8c-4d9e-a0b1-c2d3e4f5a6b7", B2, "Zr8wq1Tn-room-b2"),
        ("5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d", C3, "Pq2xY7mK-room-c3"),
    ]:
        tmp = graph.add_subscription(mailbox, expires_in=timedelta(days=6), clientState=state)
        graph.subscriptions[sub_id] = {**graph.subscriptions.pop(tmp), "id": sub_id}


def relay_connector(make_connector: Any, receiver: Receiver, **over: Any) -> Connector:
    states = ("k3Yq0pL9-room-a1", "Zr8wq1Tn-room-b2", "Pq2xY7mK-room-c3")
    connector: Connector = make_connector(
        service=httpx.ASGITransport(app=receiver.app()), client_states=states, **over
    )
    return connector


async def post(app: Any, path: str, body: bytes | None = None, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://relay.test"
    ) as http:
        return await http.post(path, content=body or b"", **kw)


async def test_validation_handshake_on_both_endpoints(make_connector: Any) -> None:
    app = create_app(make_connector())
    token = (
        "Validation: Testing client application reachability for subscription Request-Id: 25ba5e96"
    )
    for path in ("/graph/notifications", "/graph/lifecycle"):
        response = await post(
            app,
            path,
            params={"validationToken": token},
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text == token


async def test_relay_end_to_end_into_the_service(make_connector: Any, graph: FakeGraph) -> None:
    known_subscriptions(graph)
    receiver = Receiver(WEBHOOK_SECRET)
    connector = relay_connector(make_connector, receiver)
    app = create_app(connector)
    # Graph's burst: the same batch three times, plus the lifecycle batch
    for _ in range(3):
        assert (
            await post(app, "/graph/notifications", json.dumps(BATCH).encode())
        ).status_code == 202
    assert (await post(app, "/graph/lifecycle", json.dumps(LIFECYCLE).encode())).status_code == 202
    assert connector.store.pending_count() == 9  # durable before the 202, nothing sent yet
    assert receiver.accepted == []
    assert connector.relay is not None
    assert await connector.relay.drain() is None
    assert connector.store.pending_count() == 0
    [call] = receiver.accepted
    assert call["tenant"] == "contoso"
    assert call["changes"] == [
        {
            "mailbox": A1,
            "subscriptionId": "8c1f2a9e-5b3d-4e8f-9a7c-1d2e3f4a5b6c",
            "changeType": "created",
        },
        {
            "mailbox": B2,
            "subscriptionId": "0d4e5f6a-7b8c-4d9e-a0b1-c2d3e4f5a6b7",
            "changeType": "updated",
        },
    ]
    assert [(x["mailbox"], x["lifecycleEvent"]) for x in call["lifecycle"]] == [
        (A1, "reauthorizationRequired"),
        (B2, "missed"),
        (C3, "subscriptionRemoved"),
    ]
    assert call["resync"] == []
    assert "windows" not in call


async def test_wrong_client_state_is_acknowledged_and_ignored(
    make_connector: Any, graph: FakeGraph
) -> None:
    known_subscriptions(graph)
    receiver = Receiver(WEBHOOK_SECRET)
    connector = relay_connector(make_connector, receiver)
    forged = copy.deepcopy(BATCH)
    forged["value"][0]["clientState"] = "guessed"
    del forged["value"][1]["clientState"]
    response = await post(
        create_app(connector), "/graph/notifications", json.dumps(forged).encode()
    )
    assert response.status_code == 202
    assert connector.store.pending_count() == 0
    assert connector.relay is not None
    assert await connector.relay.drain() is None
    assert receiver.accepted == []
    bad = await post(create_app(connector), "/graph/notifications", b"not json")
    assert bad.status_code == 400


async def test_outage_collapses_backlog_into_resync(
    make_connector: Any, graph: FakeGraph, clock: FakeClock
) -> None:
    known_subscriptions(graph)
    receiver = Receiver(WEBHOOK_SECRET, down=True)
    connector = relay_connector(make_connector, receiver)  # resync after 30 s, backoff <= 8 s
    relay = connector.relay
    assert relay is not None
    app = create_app(connector)
    await post(app, "/graph/notifications", json.dumps(BATCH).encode())
    delays: list[float] = []
    while len(delays) < 12:
        delay = await relay.drain()
        assert delay is not None
        assert 0 < delay <= 8
        delays.append(delay)
        await clock.sleep(delay)
    assert delays[0] < delays[3]  # exponential, then capped
    # Notifications keep arriving during the outage; none is lost.
    await post(app, "/graph/lifecycle", json.dumps(LIFECYCLE).encode())
    await clock.sleep(31)
    assert await relay.drain() is not None
    receiver.down = False
    assert await relay.drain() is None
    [call] = receiver.accepted
    assert call["changes"] == []
    assert call["lifecycle"] == []
    assert sorted(call["resync"]) == [A1, B2, C3]
    assert connector.store.pending_count() == 0
    assert connector.store.failing_since() == (None, 0)


async def test_backlog_survives_a_restart(make_connector: Any, graph: FakeGraph) -> None:
    known_subscriptions(graph)
    receiver = Receiver(WEBHOOK_SECRET, down=True)
    first = relay_connector(make_connector, receiver)
    await post(create_app(first), "/graph/notifications", json.dumps(BATCH).encode())
    assert first.relay is not None
    assert await first.relay.drain() is not None
    await first.aclose()
    receiver.down = False
    second = relay_connector(make_connector, receiver)
    assert second.relay is not None
    assert await second.relay.drain() is None
    assert receiver.changes() == [(A1, "created"), (B2, "updated")]


async def test_push_mode_sends_the_basic_window(
    make_connector: Any, graph: FakeGraph, clock: FakeClock
) -> None:
    known_subscriptions(graph)
    today = clock.now().replace(hour=9, minute=0, second=0)
    event = {
        **sample("calendarview-page1.json")["value"][0],
        "start": {"dateTime": today.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"},
        "end": {
            "dateTime": (today + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.0000000"),
            "timeZone": "UTC",
        },
        "body": {"content": "board minutes"},
        "attendees": [{"emailAddress": {"address": "x@y"}}],
    }
    graph.events[A1] = [event]
    graph.denied.add(B2)
    receiver = Receiver(WEBHOOK_SECRET)
    connector = relay_connector(make_connector, receiver, push_events=True)
    await post(create_app(connector), "/graph/notifications", json.dumps(BATCH).encode())
    assert connector.relay is not None
    assert await connector.relay.drain() is None
    [call] = receiver.accepted
    [window] = call["windows"]
    midnight = clock.now().strftime("%Y-%m-%dT00:00:00Z")
    assert (window["mailbox"], window["start"]) == (A1, midnight)
    assert window["end"] == (clock.now() + timedelta(days=14)).strftime("%Y-%m-%dT00:00:00Z")
    assert [tuple(e) for e in window["events"]] == [BASIC_FIELDS]
    assert "board minutes" not in json.dumps(call)
    assert call["resync"] == [B2]  # its window could not be read: the service must resync it


async def test_pushed_windows_keep_to_the_connector_title_policy(
    make_connector: Any, graph: FakeGraph, clock: FakeClock
) -> None:
    known_subscriptions(graph)
    today = clock.now().replace(hour=9, minute=0, second=0)
    at = {
        "start": {"dateTime": today.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"},
        "end": {
            "dateTime": (today + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.0000000"),
            "timeZone": "UTC",
        },
    }
    page = sample("calendarview-page1.json")["value"]
    graph.events[A1] = [{**page[0], **at}, {**page[4], **at}]
    receiver = Receiver(WEBHOOK_SECRET)
    connector = relay_connector(
        make_connector, receiver, push_events=True, title_policy=TitlePolicy.WITHHOLD_PRIVATE
    )
    await post(create_app(connector), "/graph/notifications", json.dumps(BATCH).encode())
    assert connector.relay is not None
    assert await connector.relay.drain() is None
    [call] = receiver.accepted
    [window] = [w for w in call["windows"] if w["mailbox"] == A1]
    assert [(e["subject"], e["sensitivity"]) for e in window["events"]] == [
        (page[0]["subject"], "normal"),
        (None, "private"),
    ]
    assert page[4]["subject"] not in json.dumps(call)


async def test_push_mode_reconciles_every_calendar_within_the_bound(
    make_connector: Any, graph: FakeGraph, clock: FakeClock
) -> None:
    known_subscriptions(graph)
    receiver = Receiver(WEBHOOK_SECRET)
    connector = relay_connector(make_connector, receiver, push_events=True, push_reconcile_s=100.0)
    relay = connector.relay
    assert relay is not None
    assert relay.reconciles
    await connector.subscriptions.list_all()

    def pushed_in_last_call() -> list[str]:
        return sorted(window["mailbox"] for window in receiver.accepted[-1]["windows"])

    # Never pushed: due at once, at most the budget per pass, in a stable order.
    assert relay.reconcile(budget=2) == 2
    assert await relay.drain() is None
    assert receiver.accepted[-1]["resync"] == [A1, B2]
    assert pushed_in_last_call() == [A1, B2]
    assert relay.reconcile(budget=2) == 1
    assert await relay.drain() is None
    assert pushed_in_last_call() == [C3]
    assert relay.reconcile(budget=10) == 0  # every window is fresh

    # A change notification's window counts as a push: those rooms come due one bound after
    # it, the others at their instant of the bound.
    # (The fake clock stays within the signature tolerance of the receiver's real clock.)
    await clock.sleep(60)
    await post(create_app(connector), "/graph/notifications", json.dumps(BATCH).encode())
    assert await relay.drain() is None
    assert pushed_in_last_call() == [A1, B2]
    await clock.sleep(41)
    # No staleness bound from the service: the short bound. C3 is past it.
    assert relay.reconcile_bound_s(clock.now()) == 100.0
    assert relay.reconcile(budget=10) == 1
    assert await relay.drain() is None
    assert pushed_in_last_call() == [C3]
    # C3, pushed by the reconciliation, comes due at its instant of the bound.
    c3_due = cadence.next_push(clock.now(), bound_s=100.0, at=cadence.phase(C3))
    await clock.sleep(58)
    early = int(c3_due <= clock.now())
    assert relay.reconcile(budget=10) == early
    await clock.sleep(1)  # a bound after the notification's push
    late = int(c3_due <= clock.now()) - early
    assert relay.reconcile(budget=10) == 2 + late
    assert await relay.drain() is None
    assert pushed_in_last_call() == sorted([A1, B2] + ([C3] if early + late else []))

    # A resync the service could not take waits in the inbox; it is not queued twice.
    await clock.sleep(101)
    receiver.down = True
    assert relay.reconcile(budget=10) == 3
    assert await relay.drain() is not None
    assert relay.reconcile(budget=10) == 0
    receiver.down = False
    assert await relay.drain() is None
    assert sorted(receiver.accepted[-1]["resync"]) == [A1, B2, C3]
    assert connector.store.pending_count() == 0


async def test_push_reconciliation_keeps_the_long_bound_only_while_listening(
    make_connector: Any, graph: FakeGraph, clock: FakeClock
) -> None:
    known_subscriptions(graph)
    receiver = Receiver(WEBHOOK_SECRET)
    connector = relay_connector(
        make_connector,
        receiver,
        push_events=True,
        push_reconcile_s=100.0,
        push_reconcile_healthy_s=1000.0,
    )
    relay, store = connector.relay, connector.store
    assert relay is not None
    await connector.subscriptions.list_all()
    # Graph notifies, but the service has not said its staleness bound: the short bound.
    await post(create_app(connector), "/graph/notifications", json.dumps(BATCH).encode())
    assert relay.reconcile_bound_s(clock.now()) == 100.0

    def bound() -> float:
        return relay.reconcile_bound_s(clock.now())

    def bounded(staleness_s: float) -> None:
        store.save_desired(
            Desired.from_json(
                {
                    "mailboxes": [A1, B2, C3],
                    "notificationUrl": "https://relay.test/graph/notifications",
                    "clientState": "k3Yq0pL9-room-a1",
                    "stalenessBoundS": staleness_s,
                }
            ).to_json()
        )

    async def notified() -> None:
        answer = await post(app, "/graph/notifications", json.dumps(BATCH).encode())
        assert answer.status_code == 202

    # Listening: a window a notification pushed comes due one long bound later, one the
    # reconciliation pushed at its own instant of the long bound.
    app = create_app(connector)
    bounded(5000)
    await notified()
    assert bound() == 1000.0  # the healthy bound: the tenant's less the short one is longer
    assert await relay.drain() is None  # A1 and B2 changed
    noticed = clock.now()
    await clock.sleep(1)
    assert relay.reconcile(budget=10) == 1  # C3, never pushed
    assert await relay.drain() is None
    pushed = clock.now()
    due = {m: noticed + timedelta(seconds=1000) for m in (A1, B2)}
    due[C3] = cadence.next_push(pushed, bound_s=1000.0, at=cadence.phase(C3))
    assert pushed < due[C3] <= pushed + timedelta(seconds=1000)
    # Just before the first of those instants, and at it.
    first = min(due.values())
    await clock.sleep((first - clock.now()).total_seconds() - 0.001)
    assert relay.reconcile(budget=10) == 0
    await clock.sleep(0.001)
    assert relay.reconcile(budget=10) == sum(at <= clock.now() for at in due.values()) >= 1

    # Heard within the long bound, and no longer: the short bound again.
    await notified()
    heard = clock.now()
    await clock.sleep(1000)
    assert bound() == 1000.0
    await clock.sleep(0.001)
    assert bound() == 100.0
    await notified()
    assert bound() == 1000.0
    # The tenant's bound of 400 s: the healthy 1000 s capped at 400 less the short bound.
    bounded(400)
    assert bound() == 300.0
    # A tenant bound under twice the short one leaves the short one only.
    bounded(150)
    assert bound() == 100.0
    # Nothing reaches the service, or the renewals fail: nothing may be trusted to last.
    bounded(5000)
    store.record_failure(clock.now())
    assert bound() == 100.0
    store.record_success()
    renewal = connector.loops.get("renewal")
    while not renewal.failing:
        renewal.failed(RuntimeError("the token endpoint answered 503"), clock.now())
    assert bound() == 100.0
    renewal.succeeded(clock.now())
    assert bound() == 1000.0
    last_heard = store.heard_at()
    assert last_heard is not None
    assert last_heard > heard


def test_rooms_pushed_together_come_due_spread_over_the_bound() -> None:
    pushed = datetime(2026, 3, 29, 0, 30, 0, 250_000, tzinfo=UTC)  # a DST night in Europe
    bound_s = 2700.0
    due = [
        cadence.next_push(pushed, bound_s=bound_s, at=cadence.phase(f"room-{i}@contoso.example"))
        for i in range(1000)
    ]
    offsets = [(at - pushed).total_seconds() for at in due]
    assert all(0 < offset <= bound_s for offset in offsets)
    # Ten stretches of the bound each hold about a tenth (a binomial's spread: about 10).
    tenths = Counter(min(int(offset // (bound_s / 10)), 9) for offset in offsets)
    assert min(tenths.values()) >= 70
    assert max(tenths.values()) <= 130
    # Pushed at its instant, a window is next due exactly one bound later.
    for index, at in enumerate(due[:50]):
        phase = cadence.phase(f"room-{index}@contoso.example")
        assert cadence.next_push(at, bound_s=bound_s, at=phase) - at == timedelta(seconds=bound_s)
    # A push a change notification asked for: one bound after it, off the grid.
    first = cadence.phase("room-0@contoso.example")
    assert cadence.due(pushed, bound_s=bound_s, at=first, on_notice=False) == due[0]
    on_notice = cadence.due(pushed, bound_s=bound_s, at=first, on_notice=True)
    assert on_notice == pushed + timedelta(seconds=bound_s)
    # The phase is the mailbox's, however it is spelt.
    assert cadence.phase("Room-1@Contoso.example") == cadence.phase("room-1@contoso.example")
    assert cadence.long_bound_s(short_s=900, healthy_s=14_400, staleness_s=3600) == 2700
    assert cadence.long_bound_s(short_s=900, healthy_s=14_400, staleness_s=None) == 900
    assert cadence.long_bound_s(short_s=900, healthy_s=1800, staleness_s=86_400) == 1800


async def test_reconciliation_needs_pushed_events_and_a_bound(
    make_connector: Any, graph: FakeGraph
) -> None:
    known_subscriptions(graph)
    receiver = Receiver(WEBHOOK_SECRET)
    for over in ({}, {"push_events": True, "push_reconcile_s": 0.0}):
        connector = relay_connector(make_connector, receiver, **over)
        await connector.subscriptions.list_all()
        assert connector.relay is not None
        assert not connector.relay.reconciles
        assert connector.relay.reconcile(budget=10) == 0
        assert connector.store.pending_count() == 0


async def test_unknown_subscription_resolved_from_a_fresh_listing(
    make_connector: Any, graph: FakeGraph
) -> None:
    receiver = Receiver(WEBHOOK_SECRET)
    connector = relay_connector(make_connector, receiver)
    await post(create_app(connector), "/graph/notifications", json.dumps(BATCH).encode())
    known_subscriptions(graph)  # created by another run; this process has never listed them
    assert connector.relay is not None
    assert await connector.relay.drain() is None
    assert receiver.changes() == [(A1, "created"), (B2, "updated")]


async def test_relay_signature_refused_when_secret_differs(clock: FakeClock, tmp_path: Any) -> None:
    receiver = Receiver(WEBHOOK_SECRET)
    store = StateStore.in_directory(tmp_path)
    store.remember_subscription("s1", A1, "cs")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=receiver.app())) as http:
        service = ServiceClient(
            base_url="https://svc.test",
            tenant="contoso",
            signer=Signer("whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB", clock),
            http=http,
        )
        relay = Relay(store=store, clock=clock, service=service)
        relay.receive(
            "change",
            json.dumps(
                {"value": [{"subscriptionId": "s1", "clientState": "cs", "changeType": "updated"}]}
            ).encode(),
        )
        assert await relay.drain() is not None  # refused -> kept for retry
        assert receiver.refused == 1
        assert store.pending_count() == 1
    store.close()


async def test_run_loop_forwards_when_woken(make_connector: Any, graph: FakeGraph) -> None:
    known_subscriptions(graph)
    receiver = Receiver(WEBHOOK_SECRET)
    connector = relay_connector(make_connector, receiver)
    assert connector.relay is not None
    task = asyncio.create_task(connector.relay.run(idle_s=3600))
    try:
        await post(create_app(connector), "/graph/notifications", json.dumps(BATCH).encode())
        for _ in range(1000):  # the map refresh fetches a token in a worker thread
            if receiver.accepted:
                break
            await asyncio.sleep(0.005)
        assert receiver.changes() == [(A1, "created"), (B2, "updated")]
    finally:
        task.cancel()


async def test_client_state_of_another_subscription_is_refused(
    make_connector: Any, graph: FakeGraph
) -> None:
    known_subscriptions(graph)
    receiver = Receiver(WEBHOOK_SECRET)
    connector = relay_connector(make_connector, receiver)
    await connector.subscriptions.list_all()  # learns each subscription's own clientState
    swapped = copy.deepcopy(BATCH)
    swapped["value"][0]["clientState"] = swapped["value"][1]["clientState"]
    await post(create_app(connector), "/graph/notifications", json.dumps(swapped).encode())
    assert connector.relay is not None
    assert await connector.relay.drain() is None
    assert receiver.changes() == [(B2, "updated")]


async def test_reauthorization_required_renews_the_subscription(
    make_connector: Any, graph: FakeGraph, clock: FakeClock
) -> None:
    known_subscriptions(graph)
    sub_id = "8c1f2a9e-5b3d-4e8f-9a7c-1d2e3f4a5b6c"
    graph.subscriptions[sub_id]["expirationDateTime"] = (
        clock.now() + timedelta(hours=50)
    ).strftime("%Y-%m-%dT%H:%M:%SZ")
    receiver = Receiver(WEBHOOK_SECRET)
    connector = relay_connector(make_connector, receiver)
    app = create_app(connector)
    only_reauth = {"value": [LIFECYCLE["value"][0]]}
    for _ in range(2):  # Graph repeats it; one PATCH within 10 minutes is enough
        await post(app, "/graph/lifecycle", json.dumps(only_reauth).encode())
        assert connector.relay is not None
        assert await connector.relay.drain() is None
    patches = [p for m, p in graph.requests if m == "PATCH"]
    assert patches == [f"/subscriptions/{sub_id}"]
    expires = graph.subscriptions[sub_id]["expirationDateTime"]
    assert expires > (clock.now() + timedelta(days=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [x["lifecycleEvent"] for c in receiver.accepted for x in c["lifecycle"]] == [
        "reauthorizationRequired"
    ] * 2


def test_a_batch_reads_the_client_states_of_its_own_subscriptions(tmp_path: Any) -> None:
    store = StateStore(tmp_path / "state.db")
    try:
        for n in range(1200):
            store.remember_subscription(f"sub-{n}", f"room{n}@contoso.test", f"state-{n}")
        store.remember_subscription("sub-none", "roomx@contoso.test", None)
        # More ids than one IN list holds, some unknown, one without a clientState, repeats.
        wanted = [f"sub-{n}" for n in range(0, 1200, 2)] + ["sub-999", "nobody", "sub-none"]
        found = store.client_states_of(wanted + wanted[:10])
        assert found == {f"sub-{n}": f"state-{n}" for n in range(0, 1200, 2)} | {
            "sub-999": "state-999"
        }
        assert store.client_states_of([]) == {}
    finally:
        store.close()
