from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest

from bookingcache_connector.app import create_app
from bookingcache_connector.clock import parse_instant
from bookingcache_connector.errors import BadRequest, GraphError
from bookingcache_connector.ratelimit import SlidingWindow
from bookingcache_connector.signing import Signer
from bookingcache_connector.subscriptions import Desired

from .conftest import WEBHOOK_SECRET
from .fakes import FakeClock, FakeGraph

URL = "https://relay.contoso.example/graph/notifications"
LIFECYCLE = "https://relay.contoso.example/graph/lifecycle"
ROOMS = ["room-a1@contoso.example", "room-b2@contoso.example", "room-c3@contoso.example"]


def desired(rooms: list[str], **over: Any) -> Desired:
    body = {
        "mailboxes": rooms,
        "notificationUrl": URL,
        "lifecycleNotificationUrl": LIFECYCLE,
        "clientState": "k3Yq0pL9",
    }
    body.update(over)
    return Desired.from_json(body)


def statuses(rows: list[dict[str, Any]]) -> dict[str, str]:
    return {r["mailbox"]: r["status"] for r in rows}


async def test_add_then_idempotent_then_remove(
    make_connector: Any, graph: FakeGraph, clock: FakeClock
) -> None:
    manager = make_connector().subscriptions
    rows = await manager.converge(desired(ROOMS))
    assert statuses(rows) == dict.fromkeys(ROOMS, "created")
    assert set(graph.by_mailbox()) == set(ROOMS)
    for r in rows:
        sub = graph.subscriptions[r["subscriptionId"]]
        assert sub["changeType"] == "created,updated,deleted"
        assert (sub["notificationUrl"], sub["lifecycleNotificationUrl"], sub["clientState"]) == (
            URL,
            LIFECYCLE,
            "k3Yq0pL9",
        )
        lifetime = parse_instant(sub["expirationDateTime"]) - clock.now()
        assert timedelta(minutes=10_000) < lifetime <= timedelta(minutes=10_080)
        assert r["error"] is None
        assert r["expirationDateTime"] == sub["expirationDateTime"]

    writes = len([m for m, _ in graph.requests if m != "GET"])
    clock.advance(3600)
    again = await manager.converge(desired(ROOMS))
    assert statuses(again) == dict.fromkeys(ROOMS, "unchanged")
    assert len([m for m, _ in graph.requests if m != "GET"]) == writes  # no write at all

    gone = ROOMS[2]
    rows = await manager.converge(desired([*ROOMS[:2], "room-d4@contoso.example"]))
    assert statuses(rows) == {
        ROOMS[0]: "unchanged",
        ROOMS[1]: "unchanged",
        "room-d4@contoso.example": "created",
        gone: "deleted",
    }
    assert set(graph.by_mailbox()) == {ROOMS[0], ROOMS[1], "room-d4@contoso.example"}


async def test_a_partial_pass_leaves_the_mailboxes_it_does_not_name(
    make_connector: Any, graph: FakeGraph, clock: FakeClock
) -> None:
    manager = make_connector().subscriptions
    await manager.converge(desired(ROOMS[:2]))
    rows = await manager.converge(desired([ROOMS[2]]), prune=False)
    assert statuses(rows) == {ROOMS[2]: "created"}
    assert set(graph.by_mailbox()) == set(ROOMS)  # the first two are still there
    # The stored desired set gained the third: a new process's timer keeps all three.
    clock.advance(timedelta(days=5, hours=1).total_seconds())
    rows = await make_connector().subscriptions.timer()
    assert statuses(rows) == dict.fromkeys(ROOMS, "renewed")
    # A full pass still removes what it does not name.
    rows = await manager.converge(desired(ROOMS[1:]))
    assert statuses(rows) == {ROOMS[0]: "deleted", ROOMS[1]: "unchanged", ROOMS[2]: "unchanged"}


async def test_a_partial_pass_takes_the_new_urls_for_the_stored_set(
    make_connector: Any, graph: FakeGraph, clock: FakeClock
) -> None:
    manager = make_connector().subscriptions
    await manager.converge(desired(ROOMS[:1]))
    await manager.converge(desired(ROOMS[1:2], clientState="rotated-state"), prune=False)
    rows = await make_connector().subscriptions.timer()
    # The timer converges both mailboxes to the clientState of the latest call.
    assert statuses(rows) == {ROOMS[0]: "recreated", ROOMS[1]: "unchanged"}
    assert {sub["clientState"] for sub in graph.subscriptions.values()} == {"rotated-state"}


async def test_foreign_subscriptions_of_the_app_are_left_alone(
    make_connector: Any, graph: FakeGraph
) -> None:
    other = graph.add_subscription(
        "room-z9@contoso.example",
        expires_in=timedelta(days=5),
        notificationUrl="https://elsewhere.example/hook",
    )
    rows = await make_connector().subscriptions.converge(desired(ROOMS[:1]))
    assert statuses(rows) == {ROOMS[0]: "created"}
    assert other in graph.subscriptions


async def test_renews_below_48_hours_and_recreates_on_404(
    make_connector: Any, graph: FakeGraph, clock: FakeClock
) -> None:
    manager = make_connector().subscriptions
    await manager.converge(desired(ROOMS))
    subs = graph.by_mailbox()
    # a: 47 h left -> renew; b: 49 h left -> unchanged; c: vanished between listing and PATCH -> 404
    subs[ROOMS[0]]["expirationDateTime"] = (clock.now() + timedelta(hours=47)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    subs[ROOMS[1]]["expirationDateTime"] = (clock.now() + timedelta(hours=49)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    subs[ROOMS[2]]["expirationDateTime"] = (clock.now() + timedelta(hours=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    vanished = subs[ROOMS[2]]["id"]

    original = graph.handle

    async def vanish_before_patch(request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH" and request.url.path.endswith(vanished):
            graph.subscriptions.pop(vanished, None)
        return await original(request)

    graph.handle = vanish_before_patch  # type: ignore[method-assign]
    connector = make_connector()
    rows = await connector.subscriptions.converge(desired(ROOMS))
    assert statuses(rows) == {ROOMS[0]: "renewed", ROOMS[1]: "unchanged", ROOMS[2]: "recreated"}
    renewed = graph.by_mailbox()[ROOMS[0]]
    assert parse_instant(renewed["expirationDateTime"]) - clock.now() > timedelta(days=6)
    assert graph.by_mailbox()[ROOMS[2]]["id"] != vanished


async def test_renew_now_renews_whatever_the_expiry_once(
    make_connector: Any, graph: FakeGraph, clock: FakeClock
) -> None:
    manager = make_connector().subscriptions
    await manager.converge(desired(ROOMS))
    clock.advance(24 * 3600)  # six days left: no renewal is due
    before = {m: s["expirationDateTime"] for m, s in graph.by_mailbox().items()}
    # Graph asked for reauthorization of one (in Alternative 1 bookingcache hears of it).
    rows = await manager.converge(desired(ROOMS, renewNow=[ROOMS[1].upper()]))
    assert statuses(rows) == {ROOMS[0]: "unchanged", ROOMS[1]: "renewed", ROOMS[2]: "unchanged"}
    after = graph.by_mailbox()
    assert after[ROOMS[1]]["expirationDateTime"] > before[ROOMS[1]]
    assert parse_instant(after[ROOMS[1]]["expirationDateTime"]) - clock.now() > timedelta(days=6)
    assert after[ROOMS[0]]["expirationDateTime"] == before[ROOMS[0]]
    # A one-off request: the stored set the renewal timer re-converges does not repeat it.
    clock.advance(3600)
    assert statuses(await manager.timer()) == dict.fromkeys(ROOMS, "unchanged")


async def test_renew_now_must_name_wanted_mailboxes() -> None:
    with pytest.raises(BadRequest, match="renewNow"):
        desired(ROOMS[:1], renewNow=[ROOMS[2]])
    with pytest.raises(BadRequest, match="renewNow"):
        desired(ROOMS[:1], renewNow="room-a1@contoso.example")


async def test_adopts_on_409(make_connector: Any, graph: FakeGraph, clock: FakeClock) -> None:
    # Created by an earlier run that crashed; the first listing misses it (paging race).
    existing = graph.add_subscription(
        ROOMS[0],
        expires_in=timedelta(hours=5),
        notificationUrl="https://old.example/n",
        lifecycleNotificationUrl=LIFECYCLE,
        clientState=None,
    )
    graph.hidden_from_list.add(existing)
    rows = await make_connector().subscriptions.converge(desired(ROOMS[:1]))
    assert rows == [
        {
            "mailbox": ROOMS[0],
            "subscriptionId": existing,
            "status": "adopted",
            "error": None,
            "expirationDateTime": graph.subscriptions[existing]["expirationDateTime"],
        }
    ]
    sub = graph.subscriptions[existing]
    assert sub["notificationUrl"] == URL
    assert parse_instant(sub["expirationDateTime"]) - clock.now() > timedelta(days=6)
    assert len(graph.subscriptions) == 1


async def test_different_lifecycle_url_means_delete_and_create(
    make_connector: Any, graph: FakeGraph
) -> None:
    old = graph.add_subscription(
        ROOMS[0],
        expires_in=timedelta(days=6),
        notificationUrl=URL,
        lifecycleNotificationUrl=None,
        clientState="k3Yq0pL9",
    )
    rows = await make_connector().subscriptions.converge(desired(ROOMS[:1]))
    assert statuses(rows) == {ROOMS[0]: "recreated"}
    assert old not in graph.subscriptions
    assert graph.by_mailbox()[ROOMS[0]]["lifecycleNotificationUrl"] == LIFECYCLE


async def test_403_on_one_mailbox_fails_only_that_row(
    make_connector: Any, graph: FakeGraph
) -> None:
    graph.denied.add(ROOMS[1])
    rows = await make_connector().subscriptions.converge(desired(ROOMS))
    assert statuses(rows) == {ROOMS[0]: "created", ROOMS[1]: "failed", ROOMS[2]: "created"}
    failed = next(r for r in rows if r["status"] == "failed")
    assert failed["subscriptionId"] is None
    assert "403 ErrorAccessDenied" in failed["error"]
    assert "RBAC" in failed["error"]
    assert set(graph.by_mailbox()) == {ROOMS[0], ROOMS[2]}


async def test_the_staleness_bound_is_remembered_with_the_desired_set(
    make_connector: Any,
) -> None:
    connector = make_connector()
    manager, store = connector.subscriptions, connector.store
    await manager.converge(desired(ROOMS[:1]))
    assert store.staleness_bound_s() is None  # a service that does not send it
    await manager.converge(desired(ROOMS[:1], stalenessBoundS=3600))
    assert store.staleness_bound_s() == 3600.0
    # A partial pass without it keeps the stored one; with it, takes its own.
    await manager.converge(desired(ROOMS[1:2]), prune=False)
    assert store.staleness_bound_s() == 3600.0
    await manager.converge(desired(ROOMS[2:], stalenessBoundS=7200.5), prune=False)
    assert store.staleness_bound_s() == 7200.5
    assert Desired.from_json(store.load_desired()).staleness_bound_s == 7200.5
    for wrong in (0, -1, 30 * 86_400 + 1, "3600", True):
        with pytest.raises(BadRequest, match="stalenessBoundS"):
            desired(ROOMS[:1], stalenessBoundS=wrong)


async def test_put_endpoint_converges_a_signed_call_and_refuses_a_bad_body(
    make_connector: Any, graph: FakeGraph, clock: FakeClock
) -> None:
    app = create_app(make_connector())
    body = json.dumps(desired(ROOMS[:2]).to_json()).encode()
    signer = Signer(WEBHOOK_SECRET, clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://c"
    ) as http:
        headers = signer.headers("PUT", "/v1/subscriptions", body)
        ok = await http.put("/v1/subscriptions", content=body, headers=headers)
        assert ok.status_code == 200
        assert statuses(ok.json()["subscriptions"]) == dict.fromkeys(ROOMS[:2], "created")
        bad = b'{"mailboxes": "room-a1", "notificationUrl": "http://x"}'
        resp = await http.put(
            "/v1/subscriptions",
            content=bad,
            headers=signer.headers("PUT", "/v1/subscriptions", bad),
        )
        assert resp.status_code == 400


async def test_patch_endpoint_converges_only_the_named_mailboxes(
    make_connector: Any, graph: FakeGraph, clock: FakeClock
) -> None:
    app = create_app(make_connector())
    signer = Signer(WEBHOOK_SECRET, clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://c"
    ) as http:
        for method, rooms in (("PUT", ROOMS[:2]), ("PATCH", ROOMS[2:])):
            body = json.dumps(desired(rooms).to_json()).encode()
            headers = signer.headers(method, "/v1/subscriptions", body)
            answer = await http.request(method, "/v1/subscriptions", content=body, headers=headers)
            assert answer.status_code == 200, answer.text
            assert statuses(answer.json()["subscriptions"]) == dict.fromkeys(rooms, "created")
    assert set(graph.by_mailbox()) == set(ROOMS)


async def test_timer_reconverges_last_desired_set(
    make_connector: Any, graph: FakeGraph, clock: FakeClock
) -> None:
    await make_connector().subscriptions.converge(desired(ROOMS))
    clock.advance(timedelta(days=5, hours=1).total_seconds())  # under 48 h left now
    graph.subscriptions.pop(graph.by_mailbox()[ROOMS[2]]["id"])  # and one expired meanwhile
    fresh = make_connector()  # a new process: the desired set comes from the state file
    rows = await fresh.subscriptions.timer()
    assert statuses(rows) == {ROOMS[0]: "renewed", ROOMS[1]: "renewed", ROOMS[2]: "created"}
    for sub in graph.subscriptions.values():
        assert parse_instant(sub["expirationDateTime"]) - clock.now() > timedelta(days=6)


async def test_timer_without_desired_set_renews_what_exists(
    make_connector: Any, graph: FakeGraph
) -> None:
    soon = graph.add_subscription(ROOMS[0], expires_in=timedelta(hours=10))
    later = graph.add_subscription(ROOMS[1], expires_in=timedelta(days=6))
    before = graph.subscriptions[later]["expirationDateTime"]
    rows = await make_connector().subscriptions.timer()
    assert statuses(rows) == {ROOMS[0]: "renewed", ROOMS[1]: "unchanged"}
    assert graph.subscriptions[later]["expirationDateTime"] == before
    assert graph.subscriptions[soon]["expirationDateTime"] != before


async def test_429_honours_retry_after_and_listing_pages(
    make_connector: Any, graph: FakeGraph, clock: FakeClock
) -> None:
    for i in range(5):
        graph.add_subscription(f"room-{i}@contoso.example", expires_in=timedelta(days=6))
    graph.throttle_next = 2
    subs = await make_connector().subscriptions.list_all()
    assert len(subs) == 5  # 3 pages of 2
    assert clock.slept[:2] == [7.0, 7.0]


async def test_write_and_list_limits_spread_calls(clock: FakeClock) -> None:
    window = SlidingWindow(500, 20, clock)
    start = clock.now()
    for _ in range(1200):
        async with window.slot():
            pass
    assert clock.now() - start >= timedelta(seconds=40)  # 1,200 writes need three 20-s windows


async def test_a_request_holds_its_place_until_a_window_after_its_answer(
    clock: FakeClock,
) -> None:
    # Graph counts a request when it arrives, which may be as late as its answer.
    window = SlidingWindow(1, 20, clock)
    async with window.slot():
        clock.advance(5)  # answered 5 s after it was sent
    start = clock.now()
    async with window.slot():
        pass
    assert clock.now() - start == timedelta(seconds=20)


async def test_a_retry_after_429_counts_against_the_limit_too(
    make_connector: Any, graph: FakeGraph, clock: FakeClock
) -> None:
    graph.add_subscription("room-0@contoso.example", expires_in=timedelta(days=6))
    connector = make_connector()
    window = SlidingWindow(2, 20, clock)
    graph.throttle_next = 1
    await connector.graph.list_subscriptions(quota=window)  # a 429, then its retry 7 s later
    await connector.graph.list_subscriptions(quota=window)
    # Both attempts of the first listing took a place: the next waits for the first to age out.
    assert clock.slept == [7.0, 13.0]


async def test_never_more_than_four_requests_per_mailbox(
    make_connector: Any, graph: FakeGraph
) -> None:
    graph.delay_s = 0.01
    mailbox = "room-a1@contoso.example"
    graph.events[mailbox] = []
    connector = make_connector()
    from datetime import UTC, datetime

    start, end = datetime(2026, 11, 24, tzinfo=UTC), datetime(2026, 11, 25, tzinfo=UTC)
    await asyncio.gather(
        *(connector.graph.calendar_view(mailbox, start, end) for _ in range(12)),
        *(connector.graph.calendar_view("room-b2@contoso.example", start, end) for _ in range(3)),
    )
    assert graph.max_in_flight[mailbox] == 4
    assert graph.max_in_flight["room-b2@contoso.example"] == 3


async def test_container_renews_on_its_own_schedule(
    make_connector: Any, graph: FakeGraph, clock: FakeClock
) -> None:
    from bookingcache_connector.app import renew_periodically

    connector = make_connector(renew_every_s=3600.0)
    await connector.subscriptions.converge(desired(ROOMS[:1]))
    graph.subscriptions.clear()  # vanished (expired while nobody looked)
    task = asyncio.create_task(renew_periodically(connector))
    for _ in range(500):  # token acquisition runs in a worker thread: give it real time
        if graph.subscriptions:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert set(graph.by_mailbox()) == {ROOMS[0]}
    assert clock.slept
    assert clock.slept[0] == 3600.0


async def test_409_with_other_lifecycle_url_is_adopted_by_recreating(
    make_connector: Any, graph: FakeGraph
) -> None:
    existing = graph.add_subscription(
        ROOMS[0],
        expires_in=timedelta(days=6),
        notificationUrl=URL,
        lifecycleNotificationUrl="https://old.example/lifecycle",
        clientState="k3Yq0pL9",
    )
    graph.hidden_from_list.add(existing)
    rows = await make_connector().subscriptions.converge(desired(ROOMS[:1]))
    assert statuses(rows) == {ROOMS[0]: "adopted"}
    assert existing not in graph.subscriptions
    [sub] = graph.subscriptions.values()
    assert (sub["id"], sub["lifecycleNotificationUrl"]) == (rows[0]["subscriptionId"], LIFECYCLE)


async def test_503_retry_after_then_bounded_retries(
    make_connector: Any, graph: FakeGraph, clock: FakeClock
) -> None:
    original = graph.handle
    calls = {"n": 0}

    async def unavailable(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] <= 2:
            return httpx.Response(
                503,
                headers={"Retry-After": "3"},
                json={"error": {"code": "ServiceUnavailable", "message": "try later"}},
            )
        return await original(request)

    graph.handle = unavailable  # type: ignore[method-assign]
    assert await make_connector().subscriptions.list_all() == []
    assert clock.slept[:2] == [3.0, 3.0]

    graph.throttle_next = 100  # never recovers: give up after the configured retries
    graph.requests.clear()
    with pytest.raises(GraphError) as raised:
        await make_connector(graph_max_retries=2).subscriptions.converge(desired(ROOMS[:1]))
    assert raised.value.status == 429
    assert graph.requests == [("GET", "/subscriptions")] * 3
