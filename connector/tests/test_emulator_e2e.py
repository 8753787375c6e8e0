"""End to end against the Graph emulator on loopback over TLS, through MSAL: the connector runs
as its ASGI app on a real port (so the emulator's handshakes and deliveries reach its relay),
and forwards to a receiver standing in for the service."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bookingcache_connector.app import create_app
from bookingcache_connector.bootstrap import build_connector
from bookingcache_connector.check import run_check
from bookingcache_connector.clock import SystemClock
from bookingcache_connector.config import Settings
from bookingcache_connector.events import BASIC_FIELDS
from bookingcache_connector.signing import Signer
from graph_emulator.config import EmulatorConfig
from graph_emulator.expansion import Instance
from graph_emulator.seed import seed_demo
from graph_emulator.server import BackgroundEmulator
from graph_emulator.state import new_state

from .conftest import WEBHOOK_SECRET
from .receiver import Receiver
from .servers import ServerThread

pytestmark = pytest.mark.slow


@dataclass
class World:
    emulator: BackgroundEmulator
    apps: dict[str, Any]
    in_scope: list[str]
    out_of_scope: list[str]
    cert: Path


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    # A CA bundle in the environment must not override the one configured for the connector.
    bogus = tmp_path / "bogus-ca.pem"
    bogus.write_text("not a certificate\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bogus))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(bogus))
    state = new_state(EmulatorConfig(allow_http_notifications=True), seed=3)
    apps = seed_demo(state)
    scope = apps["scoped"].mailbox_scope
    assert scope is not None
    rooms = sorted(state.directory.rooms(), key=lambda m: m.upn)
    with BackgroundEmulator(state, tls_dir=tmp_path / "tls") as emulator:
        assert emulator.listening.cert_path is not None
        yield World(
            emulator=emulator,
            apps=apps,
            in_scope=[m.upn for m in rooms if m.id in scope],
            out_of_scope=[m.upn for m in rooms if m.id not in scope],
            cert=emulator.listening.cert_path,
        )


def settings_for(world: World, tmp_path: Path, app: str = "scoped", **over: Any) -> Settings:
    values: dict[str, Any] = {
        "tenant_id": world.emulator.state.tenant_id,
        "client_id": world.apps[app].client_id,
        "client_secret": world.apps[app].client_secret,
        "authority_host": world.emulator.root,
        "graph_url": world.emulator.base_url,
        "ca_bundle": world.cert,
        "webhook_secret": WEBHOOK_SECRET,
        "state_dir": tmp_path / f"state-{app}",
    }
    values.update(over)
    return Settings(**values)


def wait_for(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def signed(method: str, url: str, body: bytes = b"") -> dict[str, str]:
    target = httpx.URL(url)
    path = target.raw_path.decode()
    return Signer(WEBHOOK_SECRET, SystemClock()).headers(method, path, body)


@pytest.mark.pinned_dates
def test_converge_relay_and_events_against_the_emulator(world: World, tmp_path: Path) -> None:
    receiver = Receiver(WEBHOOK_SECRET)
    settings = settings_for(
        world,
        tmp_path,
        push_events=True,
        service_url="https://svc.test",
        service_tenant="contoso",
        relay_max_backoff_s=0.2,
    )
    app = create_app(
        build=lambda: build_connector(
            settings, service_transport=httpx.ASGITransport(app=receiver.app())
        )
    )
    # A booking two hours ahead, and the seven whole days from its date: whatever the day or
    # hour, the demo tenant has meetings on the working days among them (at least five).
    state = world.emulator.state
    start = state.clock.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)
    first_day = start.replace(hour=0)
    last_day = first_day + timedelta(days=7)
    # The busiest room in scope, so that its events span more than one page.
    a = max(world.in_scope, key=lambda upn: len(instances(world, upn, first_day, last_day)))
    b = next(upn for upn in world.in_scope if upn != a)
    outside = world.out_of_scope[0]
    with ServerThread(app) as server, httpx.Client(base_url=server.root) as http:
        desired = {
            "mailboxes": [a, b, outside],
            "notificationUrl": f"{server.root}/graph/notifications",
            "lifecycleNotificationUrl": f"{server.root}/graph/lifecycle",
            "clientState": "e2e-client-state",
        }
        body = json.dumps(desired).encode()
        url = f"{server.root}/v1/subscriptions"
        assert http.put(url, content=body).status_code == 401
        response = http.put(url, content=body, headers=signed("PUT", url, body))
        assert response.status_code == 200, response.text
        rows = {r["mailbox"]: r for r in response.json()["subscriptions"]}
        assert {m: r["status"] for m, r in rows.items()} == {
            a: "created",
            b: "created",
            outside: "failed",
        }
        assert "403" in rows[outside]["error"]
        assert "RBAC" in rows[outside]["error"]

        again = http.put(url, content=body, headers=signed("PUT", url, body))
        assert {r["mailbox"]: r["status"] for r in again.json()["subscriptions"]} == {
            a: "unchanged",
            b: "unchanged",
            outside: "failed",
        }

        # A booking in room a: the emulator notifies the relay, which tells the "service".
        booking = {
            "organizer": "kari.nordmann@contoso.example",
            "subject": "Board meeting",
            "start": start.isoformat(),
            "end": (start + timedelta(hours=1)).isoformat(),
            "body": {"contentType": "text", "content": "confidential agenda"},
        }
        control = httpx.post(
            f"{world.emulator.root}/_emulator/mailboxes/{a}/bookings",
            json=booking,
            verify=ssl.create_default_context(cafile=str(world.cert)),
        )
        assert control.status_code == 201, control.text
        wait_for(lambda: any(m == a for m, _ in receiver.changes()))
        assert all(m == a for m, _ in receiver.changes())
        pushed = [
            w for call in receiver.accepted for w in call.get("windows", []) if w["mailbox"] == a
        ]
        assert pushed
        assert all(tuple(e) == BASIC_FIELDS for w in pushed for e in w["events"])
        assert "confidential agenda" not in json.dumps(receiver.accepted)
        assert any(
            e["subject"] is not None and e["start"] == start.strftime("%Y-%m-%dT%H:%M:%SZ")
            for e in pushed[-1]["events"]
        )

        # Basic events through the connector's own endpoint, all pages followed.
        window = f"start={first_day:%Y-%m-%dT%H:%M:%SZ}&end={last_day:%Y-%m-%dT%H:%M:%SZ}"
        events_url = f"{server.root}/v1/calendars/{a}/events?{window}"
        events = http.get(events_url, headers=signed("GET", events_url))
        assert events.status_code == 200, events.text
        listed = events.json()["events"]
        assert len(listed) > 10  # more than Graph's default page
        assert all(tuple(e) == BASIC_FIELDS and e["start"].endswith("Z") for e in listed)
        assert sorted(e["id"] for e in listed) == sorted(
            i.id for i in instances(world, a, first_day, last_day)
        )
        denied_url = f"{server.root}/v1/calendars/{outside}/events?{window}"
        assert http.get(denied_url, headers=signed("GET", denied_url)).status_code == 403

        # Removing b from the desired set deletes its subscription.
        desired["mailboxes"] = [a]
        body = json.dumps(desired).encode()
        rows_after = http.put(url, content=body, headers=signed("PUT", url, body)).json()[
            "subscriptions"
        ]
        assert {r["mailbox"]: r["status"] for r in rows_after} == {a: "unchanged", b: "deleted"}
        ctx = ssl.create_default_context(cafile=str(world.cert))
        emulator_subs = httpx.get(
            f"{world.emulator.root}/_emulator/subscriptions", verify=ctx
        ).json()
        [sub_a] = [
            x
            for x in emulator_subs["value"]
            if x["applicationId"] == world.apps["scoped"].client_id
        ]
        assert sub_a["resource"] == f"users/{a}/events"

        # Lifecycle: a "missed" reaches the service with the room's window; after
        # "subscriptionRemoved" the next convergence creates the subscription again.
        lifecycle = f"{world.emulator.root}/_emulator/subscriptions/{sub_a['id']}/lifecycle"
        assert httpx.post(lifecycle, json={"event": "missed"}, verify=ctx).status_code == 204
        wait_for(lambda: (a, "missed") in lifecycle_events(receiver))
        assert (
            httpx.post(lifecycle, json={"event": "subscriptionRemoved"}, verify=ctx).status_code
            == 204
        )
        wait_for(lambda: (a, "subscriptionRemoved") in lifecycle_events(receiver))
        rows_after = http.put(url, content=body, headers=signed("PUT", url, body)).json()[
            "subscriptions"
        ]
        assert [(r["mailbox"], r["status"]) for r in rows_after] == [(a, "created")]
        assert rows_after[0]["subscriptionId"] != sub_a["id"]


def instances(world: World, upn: str, start: datetime, end: datetime) -> list[Instance]:
    """The emulator's own calendar view of a room."""
    state = world.emulator.state
    return state.calendars.instances(state.directory.resolve(upn), start, end)


def lifecycle_events(receiver: Receiver) -> list[tuple[str, str]]:
    return [
        (x["mailbox"], x["lifecycleEvent"]) for call in receiver.accepted for x in call["lifecycle"]
    ]


def test_check_against_the_emulator(world: World, tmp_path: Path) -> None:
    async def run(
        app: str, mailboxes: list[str], urls: list[tuple[str, str]], **over: Any
    ) -> list[Any]:
        connector = build_connector(settings_for(world, tmp_path, app=app, **over))
        try:
            async with httpx.AsyncClient() as http:
                return await run_check(
                    tokens=connector.tokens,
                    graph=connector.graph,
                    clock=connector.clock,
                    http=http,
                    mailboxes=mailboxes,
                    notification_urls=urls,
                )
        finally:
            await connector.aclose()

    inside, outside = world.in_scope[0], world.out_of_scope[0]
    with ServerThread(
        create_app(build=lambda: build_connector(settings_for(world, tmp_path, "full")))
    ) as relay:
        urls = [("notificationUrl", f"{relay.root}/graph/notifications")]
        good = asyncio.run(run("scoped", [inside], urls))
        assert [(f.check, f.ok) for f in good] == [
            ("credentials", True),
            (f"mailbox {inside}", True),
            ("subscriptions", True),
            ("notificationUrl", True),
        ]
        basic = asyncio.run(run("readbasic", [inside], urls))
        assert [f.check for f in basic if not f.ok] == ["permission Calendars.Read"]
        broken = asyncio.run(
            run("scoped", [inside], [("notificationUrl", f"{relay.root}/nowhere")])
        )
        assert [f.check for f in broken if not f.ok] == ["notificationUrl"]
    bad_secret = asyncio.run(run("scoped", [inside], [], client_secret="not-the-secret"))
    assert not bad_secret[0].ok
    assert "bad credentials" in bad_secret[0].detail
    assert "invalid_client" in bad_secret[0].detail
    scoped = asyncio.run(run("scoped", [inside, outside], []))
    assert [(f.check, f.ok) for f in scoped][1:] == [
        (f"mailbox {inside}", True),
        (f"mailbox {outside}", False),
    ]
    assert "outside the RBAC scope" in scoped[2].detail
    subs = httpx.get(
        f"{world.emulator.root}/_emulator/subscriptions",
        verify=ssl.create_default_context(cafile=str(world.cert)),
    ).json()["value"]
    assert subs == []  # check leaves no subscription behind
