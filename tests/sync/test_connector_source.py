"""The connector source against the real connector app (which checks every signature), the
connector reading the Graph emulator."""

from __future__ import annotations

import contextlib
import datetime as dt
import random
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bookingcache.clock import Clock, FixedClock
from bookingcache.contract.client import ConnectorClient
from bookingcache.domain.tenancy import CalendarState, EventSource
from bookingcache.errors import UpstreamError
from bookingcache.store.sql.schema import tenants
from bookingcache.store.sql.store import SqlStore
from bookingcache.sync.sources.connector import ConnectorSource
from bookingcache_connector.app import create_app as create_connector_app
from bookingcache_connector.bootstrap import Connector, build_connector
from bookingcache_connector.config import Settings as ConnectorSettings
from tests.support.tenants import SIGNING_SECRET, TENANT, add_tenant

from .emulated import AUTHORITY_HOST, GRAPH_BASE, Emulated, emulate

START = dt.datetime(2026, 3, 16, 6, 0, tzinfo=dt.UTC)
WINDOW = (dt.datetime(2026, 3, 16, tzinfo=dt.UTC), dt.datetime(2026, 3, 30, tzinfo=dt.UTC))
CONNECTOR_URL = "https://connector.contoso.test"


class EmulatorTokens:
    """Client-credential tokens from the emulator's token endpoint (the connector's own MSAL
    client needs a socket; the grant on the wire is the same)."""

    def __init__(self, emulator: Emulated) -> None:
        self._emulator = emulator

    async def token(self) -> str:
        app = self._emulator.apps["full"]
        async with httpx.AsyncClient(transport=self._emulator.transport) as client:
            response = await client.post(
                f"{AUTHORITY_HOST}/{self._emulator.state.tenant_id}/oauth2/v2.0/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": app.client_id,
                    "client_secret": app.client_secret,
                    "scope": "https://graph.microsoft.com/.default",
                },
            )
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token


@pytest.fixture
def emulator() -> Emulated:
    return emulate(rooms=2, start=START)


@pytest.fixture
async def connector(emulator: Emulated, tmp_path: Path) -> AsyncIterator[Connector]:
    app = emulator.apps["full"]
    built = build_connector(
        ConnectorSettings(
            tenant_id=emulator.state.tenant_id,
            client_id=app.client_id,
            client_secret=app.client_secret,
            authority_host=AUTHORITY_HOST,
            graph_url=GRAPH_BASE,
            webhook_secret=SIGNING_SECRET,
            state_dir=tmp_path / "connector",
            renew_every_s=0,
        ),
        clock=emulator.state.clock,
        tokens=EmulatorTokens(emulator),
        graph_transport=emulator.transport,
        rng=random.Random(1),
    )
    yield built
    await built.aclose()


@contextlib.asynccontextmanager
async def _source(
    store: SqlStore, transport: httpx.AsyncBaseTransport, clock: Clock
) -> AsyncIterator[ConnectorSource]:
    client = ConnectorClient(clock=clock, transport=transport, events_timeout_s=5)
    try:
        yield ConnectorSource(store, client=client)
    finally:
        await client.aclose()


def _to(connector: Connector) -> httpx.AsyncBaseTransport:
    return httpx.ASGITransport(app=create_connector_app(connector))


async def test_reads_the_window_through_signed_calls(
    store: SqlStore, emulator: Emulated, connector: Connector
) -> None:
    await add_tenant(store, rooms=2, connector_url=CONNECTOR_URL)
    room = emulator.rooms[0]
    emulator.book(room, WINDOW[0] + dt.timedelta(days=1, hours=9), 60)
    emulator.book(
        room,
        WINDOW[0] + dt.timedelta(hours=15),
        30,
        recurrence={
            "pattern": {"type": "daily", "interval": 1},
            "range": {"type": "numbered", "startDate": "2026-03-16", "numberOfOccurrences": 3},
        },
    )
    async with _source(store, _to(connector), emulator.state.clock) as source:
        calendar = CalendarState(tenant_id=TENANT, mailbox=room.upn, time_zone="UTC")
        events = await source.read_window(calendar, start=WINDOW[0], end=WINDOW[1])
    assert events is not None
    seen = {(event.id, event.start, event.end, event.is_cancelled) for event in events}
    assert seen == emulator.truth(room, *WINDOW)
    assert len(seen) == 4


async def test_a_wrong_secret_or_a_skewed_clock_is_refused(
    store: SqlStore, emulator: Emulated, connector: Connector
) -> None:
    await add_tenant(store, rooms=2, connector_url=CONNECTOR_URL)
    calendar = CalendarState(tenant_id=TENANT, mailbox=emulator.rooms[0].upn, time_zone="UTC")
    skewed = FixedClock(emulator.state.clock.now() - dt.timedelta(minutes=6))
    async with _source(store, _to(connector), skewed) as source:
        with pytest.raises(UpstreamError, match="401"):
            await source.read_window(calendar, start=WINDOW[0], end=WINDOW[1])
    await add_tenant(
        store, "fabrikam", rooms=1, connector_url=CONNECTOR_URL, source=EventSource.CONNECTOR
    )
    await store.transaction(
        lambda conn: conn.execute(
            tenants.update()
            .where(tenants.c.id == "fabrikam")
            .values(
                # Stored sealed, as the store keeps every signing secret.
                signing_secret=store.box.seal(
                    "whsec_" + "b3RoZXItdGVuYW50cy1zZWNyZXQtMDEyMzQ1Njc4OQ=="
                )
            )
        )
    )
    other = CalendarState(tenant_id="fabrikam", mailbox=emulator.rooms[0].upn, time_zone="UTC")
    async with _source(store, _to(connector), emulator.state.clock) as source:
        with pytest.raises(UpstreamError, match="401"):
            await source.read_window(other, start=WINDOW[0], end=WINDOW[1])


async def test_connector_unreachable_and_malformed_answers_are_upstream_errors(
    store: SqlStore,
) -> None:
    await add_tenant(store, rooms=1, connector_url=CONNECTOR_URL)
    calendar = CalendarState(tenant_id=TENANT, mailbox="room-0@contoso.example", time_zone="UTC")
    answers = iter(
        [
            httpx.Response(200, json={"mailbox": "room-0@contoso.example", "events": "nope"}),
            httpx.Response(
                200,
                json={
                    "mailbox": "room-0@contoso.example",
                    "start": "2026-03-16T00:00:00Z",
                    "end": "2026-03-30T00:00:00Z",
                    "events": [
                        {
                            "id": "x",
                            "start": "2026-03-17T10:00:00",  # no zone: refused
                            "end": "2026-03-17T11:00:00Z",
                            "isAllDay": False,
                            "showAs": "busy",
                        }
                    ],
                },
            ),
            httpx.Response(503, headers={"Retry-After": "4"}),
            httpx.Response(502, text="bad gateway"),
        ]
    )

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["webhook-signature"].startswith("v1,")
        return next(answers)

    async with _source(store, httpx.MockTransport(answer), FixedClock(START)) as source:
        for expected in ("unreadable", "unreadable", "503", "502"):
            with pytest.raises(UpstreamError, match=expected) as raised:
                await source.read_window(calendar, start=WINDOW[0], end=WINDOW[1])
            if expected == "503":
                assert getattr(raised.value, "retry_after_s", None) == 4
