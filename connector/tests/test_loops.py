"""The background loops outlive every exception: each failure is recorded for ``/healthz``,
logged once with its cause, and retried after a backoff that doubles with jitter; a loop that
stops running makes the connector unhealthy. On the virtual clock of ``fakes.FakeClock``."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
import httpx
import pytest

from bookingcache_connector.app import create_app, renew_periodically
from bookingcache_connector.errors import AuthError
from bookingcache_connector.functions import build_function_app
from bookingcache_connector.loops import FAILING_AFTER, Loops, LoopStatus, backoff_s

from .conftest import WEBHOOK_SECRET
from .fakes import FakeClock, FakeGraph
from .receiver import Receiver
from .test_relay import A1, B2, BATCH, known_subscriptions, post, relay_connector


async def until(predicate: Callable[[], Any], rounds: int = 2000) -> None:
    for _ in range(rounds):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(3)
    for failures, full in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 20.0), (40, 20.0)]:
        for _ in range(50):
            delay = backoff_s(failures, base_s=1.0, cap_s=20.0, rng=rng)
            assert full / 2 <= delay <= full


def test_a_loop_is_failing_after_failures_in_a_row_and_dead_once_stopped() -> None:
    loops = Loops()
    status = loops.get("relay")
    at = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    assert loops.unhealthy() == {}  # never started by a host: not dead
    status.start()
    for _ in range(FAILING_AFTER - 1):
        status.failed(AuthError("server_error", "HTTP Error: 503"), at)
    assert loops.unhealthy() == {}
    status.failed(AuthError("server_error", "HTTP Error: 503"), at)
    assert loops.unhealthy() == {"relay": f"failing ({FAILING_AFTER} failures in a row)"}
    assert status.to_json()["lastError"] == {
        "kind": "token",
        "detail": "AuthError: server_error: HTTP Error: 503",
        "at": "2026-11-23T09:00:00Z",
    }
    status.succeeded(at)
    assert loops.unhealthy() == {}
    status.stop()
    assert loops.unhealthy() == {"relay": "not running"}


def test_an_error_is_described_with_its_cause_and_without_url_credentials() -> None:
    status = LoopStatus("renewal")
    try:
        try:
            raise ConnectionError("https://user:pw@svc.example/x?code=abc failed")
        except ConnectionError as cause:
            raise RuntimeError("renewal broke") from cause
    except RuntimeError as exc:
        status.failed(exc, datetime(2026, 11, 23, tzinfo=UTC))
    assert status.last_error == (
        "RuntimeError: renewal broke (caused by ConnectionError: "
        "https://***@svc.example/x?code=*** failed)"
    )
    assert status.last_error_kind == "unexpected"


async def test_relay_loop_survives_an_unexpected_exception(
    make_connector: Any, graph: FakeGraph, caplog: pytest.LogCaptureFixture
) -> None:
    known_subscriptions(graph)
    receiver = Receiver(WEBHOOK_SECRET)
    connector = relay_connector(make_connector, receiver)
    relay = connector.relay
    assert relay is not None
    real_pending = connector.store.pending
    broken = {"left": 2}

    def pending(limit: int = 1000) -> Any:
        if broken["left"]:
            broken["left"] -= 1
            raise sqlite3.OperationalError("database is locked")
        return real_pending(limit)

    connector.store.pending = pending  # type: ignore[method-assign]
    task = asyncio.create_task(relay.run(idle_s=3600))
    try:
        await post(create_app(connector), "/graph/notifications", json.dumps(BATCH).encode())
        await until(lambda: receiver.accepted)
        assert receiver.changes() == [(A1, "created"), (B2, "updated")]
        assert not task.done()
        assert relay.status.running is True
        assert relay.status.failures == 0
        assert relay.status.total_failures == 2
        assert relay.status.last_error_kind == "unexpected"
        failures = [r for r in caplog.records if "relay loop failed" in r.getMessage()]
        assert len(failures) == 2  # one line each, the traceback only with the first
        assert failures[0].exc_info is not None
        assert failures[1].exc_info is None
        assert "OperationalError: database is locked" in failures[0].getMessage()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert relay.status.running is False
    # A relay whose task ended makes the connector unhealthy, and says so.
    answer = await get(create_app(connector), "/healthz")
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "unhealthy"
    assert body["unhealthy"] == {"relay": "not running"}
    assert body["loops"]["relay"]["running"] is False
    assert body["relay"] == {"backlog": 0, "oldestAgeSeconds": 0}


async def get(app: Any, path: str) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://relay.test"
    ) as http:
        return await http.get(path)


async def test_renewal_loop_survives_any_exception_and_backs_off(
    make_connector: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    connector = make_connector(renew_every_s=3600)
    outcomes: list[Any] = [
        RuntimeError("boom"),
        AuthError("server_error", "the token endpoint failed: HTTP Error: 503"),
        [{"mailbox": A1, "status": "failed", "error": "Graph answered 403"}],
        [{"mailbox": A1, "status": "renewed", "error": None}],
    ]
    passes = asyncio.Event()

    async def timer() -> list[dict[str, Any]]:
        if not outcomes:  # every outcome given: the next pass waits (the clock is virtual)
            await asyncio.Event().wait()
        outcome = outcomes.pop(0)
        if not outcomes:
            passes.set()
        if isinstance(outcome, Exception):
            raise outcome
        return list(outcome)

    connector.subscriptions.timer = timer
    task = asyncio.create_task(renew_periodically(connector, rng=random.Random(5)))
    try:
        await asyncio.wait_for(passes.wait(), timeout=30)
        await until(lambda: connector.loops.get("renewal").failures == 0)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    status = connector.loops.get("renewal")
    assert status.total_failures == 3
    assert status.last_error_kind == "connector"  # the pass that left a subscription failed
    # The first wait is the period; after each failure a backoff doubling from 30 s.
    first, *retries = clock.slept[:4]
    assert first == 3600
    for n, delay in enumerate(retries, start=1):
        assert 30 * 2 ** (n - 1) / 2 <= delay <= 30 * 2 ** (n - 1)
    lines = [r.getMessage() for r in caplog.records if "renewal loop failed" in r.getMessage()]
    assert len(lines) == 3
    assert "RuntimeError: boom" in lines[0]
    assert "server_error" in lines[1]
    assert "1 of 1 subscriptions failed" in lines[2]


async def test_function_timers_never_raise_and_record_the_failure(
    make_connector: Any, graph: FakeGraph
) -> None:
    known_subscriptions(graph)
    receiver = Receiver(WEBHOOK_SECRET)
    connector = relay_connector(make_connector, receiver)
    relay = connector.relay
    assert relay is not None

    async def broken_drain() -> float | None:
        raise AuthError("server_error", "the token endpoint failed: HTTP Error: 503")

    async def broken_timer() -> list[dict[str, Any]]:
        raise RuntimeError("listing broke")

    relay.drain = broken_drain  # type: ignore[method-assign]
    connector.subscriptions.timer = broken_timer  # type: ignore[method-assign]
    app = build_function_app(lambda: connector)
    fns = {str(f.get_function_name()): f.get_user_function() for f in app.get_functions()}
    for _ in range(FAILING_AFTER):
        await fns["relay_drain"](None)
        await fns["renew_subscriptions"](None)
    assert relay.status.failures == FAILING_AFTER
    assert connector.loops.get("renewal").failures == FAILING_AFTER
    answer = await fns["healthz"](
        func.HttpRequest(method="GET", url="https://fn.test/healthz", headers={}, body=b"")
    )
    assert answer.status_code == 503
    assert set(json.loads(answer.get_body())["unhealthy"]) == {"relay", "renewal"}


async def test_a_window_read_failure_counts_against_the_relay_though_it_delivers(
    make_connector: Any, graph: FakeGraph
) -> None:
    known_subscriptions(graph)
    graph.denied.add(B2)
    receiver = Receiver(WEBHOOK_SECRET)
    connector = relay_connector(make_connector, receiver, push_events=True)
    relay = connector.relay
    assert relay is not None
    await post(create_app(connector), "/graph/notifications", json.dumps(BATCH).encode())
    assert await relay.drain() is None
    [call] = receiver.accepted
    assert call["resync"] == [B2]  # delivered, with the room to resync
    assert relay.status.failures == 1
    assert relay.status.last_error_kind == "graph"
    graph.denied.clear()
    await post(create_app(connector), "/graph/notifications", json.dumps(BATCH).encode())
    assert await relay.drain() is None
    assert relay.status.failures == 0
    assert relay.status.last_success_at is not None


async def test_reconciliation_failures_are_its_own_and_do_not_stop_the_relay(
    make_connector: Any, graph: FakeGraph, caplog: pytest.LogCaptureFixture
) -> None:
    known_subscriptions(graph)
    receiver = Receiver(WEBHOOK_SECRET)
    connector = relay_connector(make_connector, receiver, push_events=True)
    relay = connector.relay
    assert relay is not None
    assert relay.reconcile_status is not None
    await connector.subscriptions.list_all()  # the subscribed rooms
    real_reconcile = relay.reconcile
    broken = {"left": 1}

    def reconcile(*, budget: int) -> int:
        if broken["left"]:
            broken["left"] -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return real_reconcile(budget=budget)

    relay.reconcile = reconcile  # type: ignore[method-assign]
    task = asyncio.create_task(relay.run(idle_s=3600))
    try:
        # The reconciliation then pushes every subscribed room's window.
        await until(
            lambda: len({w["mailbox"] for a in receiver.accepted for w in a["windows"]}) == 3
        )
        assert relay.reconcile_status.total_failures == 1
        assert relay.reconcile_status.failures == 0
        assert relay.status.total_failures == 0
        assert relay.reconcile_status.running is True
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert relay.reconcile_status.running is False
    lines = [r for r in caplog.records if "reconcile loop failed" in r.getMessage()]
    assert len(lines) == 1
    assert "OperationalError: disk I/O error" in lines[0].getMessage()
