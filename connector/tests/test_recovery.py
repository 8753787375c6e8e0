"""The connector recovers by itself from the faults Entra ID and Graph really have: the token
endpoint answering 503 with ``Retry-After`` or not answering at all, and Graph refusing a revoked
token with 401. The emulator (on loopback over TLS) fails on request through its control API;
the connector runs as its ASGI app on a real port, with real MSAL, and relays to a receiver
standing in for the service.

With ``token_lifetime_s=60`` every Graph call needs a new token: MSAL does not use a token with
less than five minutes left, as around the hourly refresh of a real one."""

from __future__ import annotations

import dataclasses
import json
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest

from bookingcache_connector.app import create_app
from bookingcache_connector.bootstrap import build_connector
from bookingcache_connector.cli import main
from bookingcache_connector.clock import SystemClock
from bookingcache_connector.config import Settings
from bookingcache_connector.errors import GraphError
from bookingcache_connector.graph import GraphClient
from bookingcache_connector.signing import Signer
from graph_emulator.config import EmulatorConfig
from graph_emulator.directory import Mailbox
from graph_emulator.seed import add_default_apps
from graph_emulator.server import BackgroundEmulator
from graph_emulator.state import new_state

from .conftest import WEBHOOK_SECRET
from .fakes import GRAPH, FakeClock, FakeGraph
from .receiver import _SPEC, Receiver
from .servers import ServerThread

ROOMS = ("room-r1@contoso.example", "room-r2@contoso.example")
ORGANIZER = "adele@contoso.example"
CLIENT_STATE = "recovery-client-state"


@dataclass
class Emulated:
    server: BackgroundEmulator
    app: Any
    cert: Path
    control: httpx.Client

    def fault_token(self, **body: Any) -> None:
        assert self.control.post("/faults/token", json=body).status_code == 201

    def clear_token_fault(self) -> None:
        assert self.control.delete("/faults/token").status_code == 204

    def book(self, room: str, hours_ahead: int = 2) -> None:
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        start += timedelta(hours=hours_ahead)
        response = self.control.post(
            f"/mailboxes/{room}/bookings",
            json={
                "organizer": ORGANIZER,
                "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "end": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        )
        assert response.status_code == 201, response.text


def emulator_with(tmp_path: Path, **config: Any) -> Iterator[Emulated]:
    state = new_state(EmulatorConfig(allow_http_notifications=True, **config), seed=11)
    rooms = [
        state.directory.add(
            Mailbox(
                id=f"5d0c2b1a-0000-4000-8000-00000000000{i}",
                upn=upn,
                display_name=f"Room R{i}",
                time_zone="Europe/Berlin",
                is_room=True,
            )
        )
        for i, upn in enumerate(ROOMS, start=1)
    ]
    state.directory.add(
        Mailbox(id="9f9f9f9f-0000-4000-8000-000000000001", upn=ORGANIZER, display_name="Adele")
    )
    apps = add_default_apps(state, scope=rooms)
    with BackgroundEmulator(state, tls_dir=tmp_path / "tls") as server:
        cert = server.listening.cert_path
        assert cert is not None
        with httpx.Client(
            base_url=f"{server.root}/_emulator",
            verify=ssl.create_default_context(cafile=str(cert)),
            trust_env=False,
        ) as control:
            yield Emulated(server, apps["full"], cert, control)


@pytest.fixture
def short_tokens(tmp_path: Path) -> Iterator[Emulated]:
    yield from emulator_with(tmp_path, token_lifetime_s=60)


@pytest.fixture
def long_tokens(tmp_path: Path) -> Iterator[Emulated]:
    yield from emulator_with(tmp_path)


def settings_for(emulated: Emulated, tmp_path: Path, **over: Any) -> Settings:
    values: dict[str, Any] = {
        "tenant_id": emulated.server.state.tenant_id,
        "client_id": emulated.app.client_id,
        "client_secret": emulated.app.client_secret,
        "authority_host": emulated.server.root,
        "graph_url": emulated.server.base_url,
        "ca_bundle": emulated.cert,
        "webhook_secret": WEBHOOK_SECRET,
        "state_dir": tmp_path / "state",
        "http_timeout_s": 10.0,
    }
    values.update(over)
    return Settings(**values)


def serve_connector(settings: Settings, receiver: Receiver | None = None) -> ServerThread:
    transport = httpx.ASGITransport(app=receiver.app()) if receiver is not None else None
    if receiver is not None:
        settings = dataclasses.replace(
            settings, service_url="https://svc.test", service_tenant="contoso"
        )
    return ServerThread(
        create_app(build=lambda: build_connector(settings, service_transport=transport))
    )


def wait_for(predicate: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def signed_get(http: httpx.Client, url: str) -> httpx.Response:
    target = httpx.URL(url)
    path = target.raw_path.decode()
    return http.get(url, headers=Signer(WEBHOOK_SECRET, SystemClock()).headers("GET", path, b""))


def signed_put(http: httpx.Client, url: str, body: dict[str, Any]) -> httpx.Response:
    raw = json.dumps(body).encode()
    path = httpx.URL(url).raw_path.decode()
    headers = Signer(WEBHOOK_SECRET, SystemClock()).headers("PUT", path, raw)
    return http.put(url, content=raw, headers=headers)


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of the exposition; 0 when it is absent."""
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name + (f"{{{inner}}}" if inner else "")) + r" ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


HEALTH_SCHEMA = jsonschema_rs.Draft202012Validator(
    {"$ref": "#/components/schemas/Health", "components": _SPEC["components"]}
)


def health(http: httpx.Client, root: str) -> tuple[int, dict[str, Any]]:
    """``/healthz``'s answer, checked against the contract's ``Health`` schema."""
    response = http.get(f"{root}/healthz")
    body = response.json()
    HEALTH_SCHEMA.validate(body)
    return response.status_code, body


def events_url(root: str, room: str) -> str:
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=7)
    return (
        f"{root}/v1/calendars/{room}/events?start={start:%Y-%m-%dT%H:%M:%SZ}"
        f"&end={end:%Y-%m-%dT%H:%M:%SZ}"
    )


def subscribe_elsewhere(emulated: Emulated, notification_url: str, room: str) -> str:
    """A subscription this app made outside the connector (its script, an earlier install):
    the connector learns its mailbox only from a Graph listing, which needs a token."""
    server = emulated.server
    with httpx.Client(
        verify=ssl.create_default_context(cafile=str(emulated.cert)), trust_env=False
    ) as http:
        token = http.post(
            f"{server.root}/{server.state.tenant_id}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": emulated.app.client_id,
                "client_secret": emulated.app.client_secret,
                "scope": "https://graph.microsoft.com/.default",
            },
        ).json()["access_token"]
        expiry = datetime.now(UTC) + timedelta(days=2)
        created = http.post(
            f"{server.base_url}/subscriptions",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "changeType": "created,updated,deleted",
                "notificationUrl": notification_url,
                "resource": f"users/{room}/events",
                "expirationDateTime": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "clientState": CLIENT_STATE,
            },
        )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_relay_survives_a_token_endpoint_503_and_reports_it(
    short_tokens: Emulated, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    receiver = Receiver(WEBHOOK_SECRET)
    settings = settings_for(
        short_tokens, tmp_path, client_states=(CLIENT_STATE,), relay_max_backoff_s=0.2
    )
    room = ROOMS[0]
    with serve_connector(settings, receiver) as server, httpx.Client() as http:
        subscribe_elsewhere(short_tokens, f"{server.root}/graph/notifications", room)
        assert health(http, server.root)[0] == 200
        short_tokens.fault_token(kind="unavailable", retry_after_s=1)
        short_tokens.book(room)

        def relay_failing() -> dict[str, Any] | None:
            status, body = health(http, server.root)
            return body if status == 503 and "relay" in body.get("unhealthy", {}) else None

        body = wait_for(relay_failing)
        relay = body["loops"]["relay"]
        assert relay["running"] is True
        assert relay["failing"] is True
        assert relay["consecutiveFailures"] >= 3
        assert relay["lastError"]["kind"] == "token"
        assert "server_error" in relay["lastError"]["detail"]
        assert body["relay"]["backlog"] >= 1
        assert body["relay"]["oldestAgeSeconds"] >= 0
        assert receiver.accepted == []
        # The container's health check says so too.
        assert main(["healthcheck", "--port", str(server.port)], env={}) == 1
        assert "relay failing" in capsys.readouterr().err
        scraped = http.get(f"{server.root}/metrics")
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain")
        text = scraped.text
        assert metric(text, "bookingcache_connector_token_failures_total", reason="server_error")
        assert metric(text, "bookingcache_connector_relay_backlog") >= 1
        assert metric(text, "bookingcache_connector_loop_running", loop="relay") == 1
        assert metric(text, "bookingcache_connector_loop_consecutive_failures", loop="relay") >= 3

        short_tokens.clear_token_fault()
        wait_for(lambda: (room, "created") in receiver.changes())
        _, body = wait_for(lambda: (answer := health(http, server.root))[0] == 200 and answer)
        assert body["status"] == "ok"
        assert body["loops"]["relay"]["consecutiveFailures"] == 0
        assert body["relay"]["backlog"] == 0
        assert main(["healthcheck", "--port", str(server.port)], env={}) == 0
        text = http.get(f"{server.root}/metrics").text
        assert metric(text, "bookingcache_connector_relay_calls_total", outcome="relayed") >= 1
        assert metric(text, "bookingcache_connector_relay_backlog") == 0
        assert metric(text, "bookingcache_connector_graph_requests_total", outcome="success") >= 1


def test_renewal_loop_survives_a_token_endpoint_503(short_tokens: Emulated, tmp_path: Path) -> None:
    settings = settings_for(short_tokens, tmp_path, renew_every_s=0.2)
    with serve_connector(settings) as server, httpx.Client(timeout=30) as http:
        desired = {
            "mailboxes": list(ROOMS),
            "notificationUrl": f"{server.root}/graph/notifications",
            "lifecycleNotificationUrl": f"{server.root}/graph/lifecycle",
            "clientState": CLIENT_STATE,
        }
        converged = signed_put(http, f"{server.root}/v1/subscriptions", desired)
        assert converged.status_code == 200, converged.text
        short_tokens.fault_token(kind="unavailable", retry_after_s=1)

        def renewal_failing() -> dict[str, Any] | None:
            status, body = health(http, server.root)
            return body if status == 503 and "renewal" in body.get("unhealthy", {}) else None

        body = wait_for(renewal_failing)
        assert body["loops"]["renewal"]["running"] is True
        assert body["loops"]["renewal"]["lastError"]["kind"] == "token"
        short_tokens.clear_token_fault()
        body = wait_for(lambda: (h := health(http, server.root))[0] == 200 and h[1])
        renewal = body["loops"]["renewal"]
        assert renewal["running"] is True
        assert renewal["consecutiveFailures"] == 0
        assert renewal["lastSuccessAt"] is not None
        text = http.get(f"{server.root}/metrics").text
        # Each pass after the fault re-converged both mailboxes (left unchanged: far from expiry).
        assert metric(text, "bookingcache_connector_subscription_outcomes_total", status="created")
        assert metric(
            text, "bookingcache_connector_subscription_outcomes_total", status="unchanged"
        )


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ({"kind": "unavailable", "retry_after_s": 1}, "server_error"),
        ({"kind": "timeout", "timeout_s": 8}, "timeout"),
    ],
)
def test_events_call_answers_502_while_the_token_endpoint_fails(
    short_tokens: Emulated, tmp_path: Path, fault: dict[str, Any], reason: str
) -> None:
    settings = settings_for(short_tokens, tmp_path, http_timeout_s=3.0)
    with serve_connector(settings) as server, httpx.Client(timeout=30) as http:
        url = events_url(server.root, ROOMS[0])
        assert signed_get(http, url).status_code == 200
        short_tokens.fault_token(**fault)
        failed = signed_get(http, url)
        assert failed.status_code == 502, failed.text
        assert failed.headers["content-type"] == "application/problem+json"
        problem = failed.json()
        assert problem["status"] == 502
        assert problem["title"] == "Connector error"
        assert reason in problem["detail"]
        assert "Traceback" not in failed.text
        assert short_tokens.app.client_secret not in failed.text
        text = http.get(f"{server.root}/metrics").text
        assert metric(text, "bookingcache_connector_token_failures_total", reason=reason) == 1
        short_tokens.clear_token_fault()
        assert wait_for(lambda: signed_get(http, url).status_code == 200)


def test_a_revoked_token_is_dropped_and_the_request_retried_once(
    long_tokens: Emulated, tmp_path: Path
) -> None:
    settings = settings_for(long_tokens, tmp_path)
    with serve_connector(settings) as server, httpx.Client(timeout=30) as http:
        url = events_url(server.root, ROOMS[0])
        assert signed_get(http, url).status_code == 200
        revoked = long_tokens.control.post("/tokens/revoke", json={})
        assert revoked.json() == {"revoked": 1}  # the connector's cached token
        again = signed_get(http, url)
        assert again.status_code == 200, again.text
        text = http.get(f"{server.root}/metrics").text
        assert (
            metric(text, "bookingcache_connector_token_refreshes_total", reason="graph_refused")
            == 1
        )
        assert (
            metric(text, "bookingcache_connector_graph_requests_total", outcome="client_error") == 1
        )
        assert metric(text, "bookingcache_connector_graph_requests_total", outcome="success") == 2
        # The new token is cached in turn: the next call needs no token request.
        assert signed_get(http, url).status_code == 200
        text = http.get(f"{server.root}/metrics").text
        assert (
            metric(text, "bookingcache_connector_token_refreshes_total", reason="graph_refused")
            == 1
        )


def test_graph_throttling_is_waited_out_and_counted(long_tokens: Emulated, tmp_path: Path) -> None:
    settings = settings_for(long_tokens, tmp_path)
    with serve_connector(settings) as server, httpx.Client(timeout=30) as http:
        url = events_url(server.root, ROOMS[1])
        thrown = long_tokens.control.post(
            "/faults/mailboxes",
            json={"mailbox": ROOMS[1], "kind": "throttle", "count": 1, "retry_after_s": 1},
        )
        assert thrown.status_code == 201
        assert signed_get(http, url).status_code == 200
        text = http.get(f"{server.root}/metrics").text
        assert metric(text, "bookingcache_connector_graph_throttled_total", status="429") == 1
        assert (
            metric(text, "bookingcache_connector_graph_requests_total", outcome="client_error") == 1
        )


class RefusedTokens:
    """A token Graph refuses whatever is done: the connector asks for a new one once."""

    def __init__(self) -> None:
        self.invalidated: list[str] = []

    async def token(self) -> str:
        return "a-token-graph-refuses"

    def invalidate(self, token: str) -> None:
        self.invalidated.append(token)


async def test_a_request_refused_again_with_a_new_token_is_not_retried_again(
    graph: FakeGraph, clock: FakeClock
) -> None:
    tokens = RefusedTokens()
    async with httpx.AsyncClient(transport=graph.transport()) as http:
        client = GraphClient(base_url=GRAPH, tokens=tokens, http=http, clock=clock)
        with pytest.raises(GraphError) as caught:
            await client.list_subscriptions()
    assert (caught.value.status, caught.value.code) == (401, "InvalidAuthenticationToken")
    assert tokens.invalidated == ["a-token-graph-refuses"]
    assert graph.requests == [("GET", "/subscriptions")] * 2
    assert clock.slept == []  # no backoff: a 401 is not worth waiting for
