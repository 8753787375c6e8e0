"""Shared fixtures: a small deterministic tenant, an in-process client over ASGITransport, and
the emulator on a real loopback port over TLS with MSAL and msgraph-sdk clients built for it."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from graph_emulator.app import create_app
from graph_emulator.auth import App
from graph_emulator.changes import ChangeType
from graph_emulator.clock import Clock
from graph_emulator.config import EmulatorConfig
from graph_emulator.directory import Mailbox
from graph_emulator.seed import add_default_apps, seed_demo
from graph_emulator.server import BackgroundEmulator
from graph_emulator.state import EmulatorState, new_state

SAMPLES = Path(__file__).resolve().parents[2] / "testdata" / "graph-samples"
GRAPH_SCOPE = ["https://graph.microsoft.com/.default"]
# A Monday before Europe's March 2026 daylight-saving change (29 March).
START = dt.datetime(2026, 3, 16, 6, 0, tzinfo=dt.UTC)


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


@dataclass
class RecordingSink:
    changes: list[tuple[str, str, ChangeType]] = field(default_factory=list)

    def event_changed(self, *, mailbox_id: str, event_id: str, change_type: ChangeType) -> None:
        self.changes.append((mailbox_id, event_id, change_type))


@dataclass
class Tenant:
    state: EmulatorState
    apps: dict[str, App]
    room: Mailbox  # AutoAccept, Berlin
    tentative_room: Mailbox  # AutoUpdate, London, keeps subjects
    other_room: Mailbox  # outside the scoped app's scope
    person: Mailbox

    def when(self, local: str, zone: str = "W. Europe Standard Time") -> dict[str, str]:
        return {"dateTime": local, "timeZone": zone}

    def book(self, mailbox: Mailbox, start: str, end: str, **extra: Any) -> dict[str, Any]:
        body = {"subject": "Planning", "start": self.when(start), "end": self.when(end)} | extra
        return self.state.calendars.create_event(mailbox.id, body, organizer=self.person.upn)


def build_tenant(config: EmulatorConfig | None = None) -> Tenant:
    config = config or EmulatorConfig()
    state = new_state(config, seed=7, clock=Clock(virtual=True, start=START))
    add = state.directory.add
    room = add(
        Mailbox(
            id="6b0e8d1c-2a3f-4b5c-9d8e-7f6a5b4c3d2e",
            upn="room-a1@contoso.example",
            display_name="Room A1",
            time_zone="Europe/Berlin",
            is_room=True,
            building="A",
            floor=1,
            capacity=8,
        )
    )
    tentative = add(
        Mailbox(
            id="1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
            upn="room-b2@contoso.example",
            display_name="Room B2",
            time_zone="Europe/London",
            is_room=True,
            booking_mode="AutoUpdate",
            delete_subject=False,
            add_organizer_to_subject=False,
            remove_private_property=False,
            delete_comments=False,
            building="B",
        )
    )
    other = add(
        Mailbox(
            id="9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
            upn="room-c3@contoso.example",
            display_name="Room C3",
            time_zone="Europe/Berlin",
            is_room=True,
            building="C",
        )
    )
    person = add(
        Mailbox(
            id="0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f",
            upn="kari.nordmann@contoso.example",
            display_name="Kari Nordmann",
            time_zone="Europe/Berlin",
        )
    )
    apps = add_default_apps(state, scope=[room, tentative])
    return Tenant(state, apps, room, tentative, other, person)


@pytest.fixture
def tenant() -> Tenant:
    return build_tenant()


@pytest.fixture
def tenant_factory() -> Callable[[EmulatorConfig | None], Tenant]:
    return build_tenant


async def get_token(client: httpx.AsyncClient, state: EmulatorState, app: App) -> str:
    response = await client.post(
        f"/{state.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "scope": GRAPH_SCOPE[0],
        },
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@dataclass
class GraphClient:
    """An in-process client for one tenant; ``as_app`` switches the bearer token."""

    http: httpx.AsyncClient
    tenant: Tenant
    app: Starlette

    async def as_app(self, name: str) -> None:
        token = await get_token(self.http, self.tenant.state, self.tenant.apps[name])
        self.http.headers["Authorization"] = f"Bearer {token}"


@pytest.fixture
def graph_factory() -> Callable[[Tenant], Any]:
    """Builds started in-process clients; used as ``async with graph_factory(t) as g``."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def open_client(tenant: Tenant) -> AsyncIterator[GraphClient]:
        app = create_app(tenant.state)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="https://graph.test"
            ) as http:
                client = GraphClient(http, tenant, app)
                await client.as_app("full")
                yield client

    return open_client


@pytest.fixture
async def graph(
    tenant: Tenant, graph_factory: Callable[[Tenant], Any]
) -> AsyncIterator[GraphClient]:
    async with graph_factory(tenant) as client:
        yield client


@pytest.fixture
def no_ca_bundle_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """``requests`` lets these override ``verify=``; the emulator has its own certificate."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


@pytest.fixture(scope="module")
def demo_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundEmulator]:
    """The demo tenant served over HTTPS on a loopback port (shared by a module's tests). Its
    clock runs from ``START``, so the seeded meetings are the same whatever the real date."""
    state = new_state(
        EmulatorConfig(allow_http_notifications=True), seed=3, clock=Clock(start=START)
    )
    apps = seed_demo(state)
    with BackgroundEmulator(state, tls_dir=tmp_path_factory.mktemp("tls")) as emulator:
        emulator.apps = apps  # type: ignore[attr-defined]
        yield emulator


@pytest.fixture
def load_sample() -> Callable[[str], Any]:
    """Reads a file of testdata/graph-samples."""
    return sample


@pytest.fixture
def msal_factory() -> Iterator[Callable[[BackgroundEmulator, App], Any]]:
    """Builds fresh MSAL clients and closes their HTTP sessions afterwards."""
    import requests

    sessions: list[requests.Session] = []

    def build(emulator: BackgroundEmulator, app: App) -> Any:
        session = requests.Session()
        session.verify = str(emulator.listening.cert_path)
        sessions.append(session)
        return msal_app(emulator, app, http_client=session)

    yield build
    for session in sessions:
        session.close()


@pytest.fixture
async def sdk_factory() -> AsyncIterator[Callable[[BackgroundEmulator, App], Any]]:
    """Builds msgraph-sdk clients and closes their connections afterwards."""
    import requests

    opened: list[httpx.AsyncHTTPTransport] = []
    sessions: list[requests.Session] = []

    def build(emulator: BackgroundEmulator, app: App) -> Any:
        session = requests.Session()
        session.verify = str(emulator.listening.cert_path)
        sessions.append(session)
        client, transport = sdk_client(emulator, app, session)
        opened.append(transport)
        return client

    yield build
    for transport in opened:
        await transport.aclose()
    for session in sessions:
        session.close()


@pytest.fixture
def recording_sink(tenant: Tenant) -> RecordingSink:
    sink = RecordingSink()
    tenant.state.notifications = sink
    return sink


def msal_app(emulator: BackgroundEmulator, app: App, *, http_client: Any = None) -> Any:
    """A fresh MSAL confidential client for the emulator (fresh: MSAL caches HTTP answers)."""
    import msal

    return msal.ConfidentialClientApplication(
        app.client_id,
        client_credential=app.client_secret,
        authority=emulator.authority,
        instance_discovery=False,
        verify=str(emulator.listening.cert_path),
        http_client=http_client,
    )


def sdk_client(
    emulator: BackgroundEmulator, app: App, session: Any
) -> tuple[Any, httpx.AsyncHTTPTransport]:
    """The official msgraph-sdk client aimed at the emulator, with tokens from MSAL."""
    import ssl

    from kiota_abstractions.authentication import (
        AccessTokenProvider,
        AllowedHostsValidator,
        BaseBearerTokenAuthenticationProvider,
    )
    from msgraph.graph_request_adapter import GraphRequestAdapter
    from msgraph.graph_service_client import GraphServiceClient
    from msgraph_core import GraphClientFactory  # type: ignore[import-untyped]

    confidential = msal_app(emulator, app, http_client=session)

    class MsalTokens(AccessTokenProvider):
        async def get_authorization_token(
            self, uri: str, additional_authentication_context: dict[str, Any] | None = None
        ) -> str:
            result = confidential.acquire_token_for_client(scopes=GRAPH_SCOPE)
            return str(result["access_token"])

        def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
            return AllowedHostsValidator(["127.0.0.1"])

    context = ssl.create_default_context(cafile=str(emulator.listening.cert_path))
    transport = httpx.AsyncHTTPTransport(verify=context)
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(transport=transport, timeout=30)
    )
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(MsalTokens()), http)
    adapter.base_url = emulator.base_url
    # The SDK wraps the transport in middleware that does not pass aclose() on: callers close
    # this transport themselves.
    return GraphServiceClient(request_adapter=adapter), transport
