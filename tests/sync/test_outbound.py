"""The outbound URL rules (contract.outbound): the form of a URL, the classes of addresses a
tenant's connector may not be, and the check of what a name resolves to when the connector
client connects."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bookingcache.clock import FixedClock
from bookingcache.contract import outbound
from bookingcache.contract.client import ConnectorClient
from bookingcache.contract.outbound import (
    DEVELOPMENT,
    PRODUCTION,
    GuardedBackend,
    GuardedTransport,
    OutboundPolicy,
    UrlNotAllowed,
    check_url,
)
from bookingcache.errors import public_error
from graph_emulator.config import EmulatorConfig
from graph_emulator.server import BackgroundEmulator
from graph_emulator.state import new_state
from tests.support.servers import serve_in_thread

FORBIDDEN = [
    "https://127.0.0.1",
    "https://127.0.0.1:8080/",
    "https://localhost",
    "https://api.localhost",
    "https://169.254.169.254/",
    "https://[::1]",
    "https://[fe80::1]",
    "https://10.0.0.1",
    "https://172.16.5.4",
    "https://192.168.1.1",
    "https://100.64.0.1",
    "https://[fd00::1]",
    "https://0.0.0.0",
    "https://224.0.0.1",
    "https://240.0.0.1",
    "https://[::ffff:127.0.0.1]",
    "https://[::ffff:169.254.169.254]",
    "https://[64:ff9b::a9fe:a9fe]",
    "https://127.1",
    "https://2130706433",
    "https://user:pw@connector.example.com",
    "https://token@connector.example.com",
    "http://connector.example.com",
    "https://connector.example.com/#part",
    "ftp://connector.example.com",
    "https:///no-host",
]

ALLOWED = [
    "https://connector.example.com",
    "https://connector.example.com:8443/base",
    "https://func.azurewebsites.net/api?code=abc",
    "https://8.8.8.8",
    "https://[2001:4860:4860::8888]",
]


@pytest.mark.parametrize("url", FORBIDDEN)
def test_outside_development_internal_and_insecure_urls_are_refused(url: str) -> None:
    assert check_url(url, PRODUCTION) is not None
    assert check_url(url, OutboundPolicy.for_environment("staging")) is not None


@pytest.mark.parametrize("url", ALLOWED)
def test_public_https_urls_are_allowed(url: str) -> None:
    assert check_url(url, PRODUCTION) is None


@pytest.mark.parametrize("url", [u for u in FORBIDDEN if u.startswith(("http://", "https://"))])
def test_development_allows_any_host(url: str) -> None:
    if url == "https:///no-host":
        assert check_url(url, DEVELOPMENT) == "it names no host"
    else:
        assert check_url(url, DEVELOPMENT) is None


def test_an_operators_own_endpoint_may_be_private_but_not_plain_http() -> None:
    assert check_url("https://graph.internal.example:8443/v1.0", PRODUCTION, public=False) is None
    assert check_url("https://10.1.2.3/v1.0", PRODUCTION, public=False) is None
    assert check_url("http://10.1.2.3/v1.0", PRODUCTION, public=False) == "it must use https"


def _resolving_to(*addresses: str) -> tuple[list[str], object]:
    asked: list[str] = []

    async def resolve(host: str, port: int) -> Sequence[str]:
        asked.append(f"{host}:{port}")
        return list(addresses)

    return asked, resolve


async def test_a_name_resolving_to_loopback_is_refused() -> None:
    asked, resolve = _resolving_to("93.184.216.34", "127.0.0.1")
    backend = GuardedBackend(resolver=resolve)  # type: ignore[arg-type]
    with pytest.raises(UrlNotAllowed, match="loopback"):
        await backend.connect_tcp("connector.example.com", 443)
    assert asked == ["connector.example.com:443"]


@pytest.mark.parametrize(
    "address", ["169.254.169.254", "10.0.0.7", "::1", "fe80::1%eth0", "::ffff:10.0.0.1"]
)
async def test_a_name_resolving_to_an_internal_address_is_refused(address: str) -> None:
    _, resolve = _resolving_to(address)
    backend = GuardedBackend(resolver=resolve)  # type: ignore[arg-type]
    with pytest.raises(UrlNotAllowed) as caught:
        await backend.addresses("connector.example.com", 443)
    assert public_error(caught.value) == "url-not-allowed"


async def test_a_name_resolving_to_public_addresses_is_connected_by_address() -> None:
    _, resolve = _resolving_to("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")
    backend = GuardedBackend(resolver=resolve)  # type: ignore[arg-type]
    assert await backend.addresses("connector.example.com", 443) == [
        "93.184.216.34",
        "2606:2800:220:1:248:1893:25c8:1946",
    ]


async def _hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("internal secret")


async def test_the_guarded_transport_never_reaches_localhost() -> None:
    app = Starlette(routes=[Route("/", _hello)])
    with serve_in_thread(app) as base:
        port = httpx.URL(base).port
        # The same server is reachable without the guard: the refusal is the guard's.
        async with httpx.AsyncClient(trust_env=False) as plain:
            assert (await plain.get(f"http://localhost:{port}/")).text == "internal secret"
        async with httpx.AsyncClient(transport=GuardedTransport()) as guarded:
            for url in (f"http://localhost:{port}/", f"http://127.0.0.1:{port}/"):
                with pytest.raises(UrlNotAllowed):
                    await guarded.get(url)


async def test_the_connector_client_refuses_internal_urls_outside_development() -> None:
    app = Starlette(routes=[Route("/v1/calendars/{mailbox}/events", _hello)])
    clock = FixedClock(dt.datetime(2026, 3, 16, tzinfo=dt.UTC))
    start, end = clock.now(), clock.now() + dt.timedelta(days=1)
    with serve_in_thread(app) as base:
        client = ConnectorClient(clock=clock, policy=PRODUCTION)
        try:
            for url in (base, base.replace("127.0.0.1", "localhost")):
                with pytest.raises(UrlNotAllowed) as caught:
                    await client.read_window(
                        url, "r@x.example", secrets=["whsec_" + "A" * 44], start=start, end=end
                    )
                assert public_error(caught.value) == "url-not-allowed"
        finally:
            await client.aclose()


@pytest.mark.parametrize(
    ("notification_url", "lifecycle_url"),
    [
        (
            "http://127.0.0.1:8080/graph/notifications/t",
            "https://svc.example.com/graph/lifecycle/t",
        ),
        ("https://svc.example.com/graph/notifications/t", "https://169.254.169.254/lifecycle"),
    ],
)
async def test_internal_notification_urls_are_not_handed_to_the_connector(
    notification_url: str, lifecycle_url: str
) -> None:
    seen: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: seen.append(request) or httpx.Response(500))
    clock = FixedClock(dt.datetime(2026, 3, 16, tzinfo=dt.UTC))
    client = ConnectorClient(clock=clock, transport=transport, policy=PRODUCTION)
    try:
        with pytest.raises(UrlNotAllowed):
            await client.put_subscriptions(
                "https://connector.example.com",
                secrets=["whsec_" + "A" * 44],
                mailboxes=["r@x.example"],
                notification_url=notification_url,
                lifecycle_url=lifecycle_url,
                client_state="state",
            )
    finally:
        await client.aclose()
    assert seen == []


async def test_tls_is_verified_for_the_name_while_the_checked_address_is_connected(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Offline no name resolves to a public address: the emulator on loopback stands in for
    one, its address let through, so that what is left is how the guard connects."""
    monkeypatch.setattr(outbound, "address_problem", lambda address: None)
    monkeypatch.setattr(outbound, "host_problem", lambda host: None)
    _, resolve = _resolving_to("127.0.0.1")
    with BackgroundEmulator(new_state(EmulatorConfig()), tls_dir=tmp_path) as emulator:
        assert emulator.listening.cert_path is not None
        trusted = ssl.create_default_context(cafile=str(emulator.listening.cert_path))
        port = httpx.URL(emulator.root).port
        guarded = GuardedTransport(verify=trusted, resolver=resolve)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=guarded) as client:
            # The certificate names localhost: the TLS handshake is for the URL's name...
            answer = await client.get(f"https://localhost:{port}/v1.0/")
            assert answer.status_code < 500
            # ...not for the address connected to, which the certificate also names.
            with pytest.raises(httpx.ConnectError, match="Hostname mismatch"):
                await client.get(f"https://graph.test:{port}/v1.0/")


async def test_a_converge_may_take_as_long_as_graph_needs_to_subscribe_every_mailbox() -> None:
    seen: list[httpx.Request] = []
    transport = httpx.MockTransport(
        lambda request: seen.append(request) or httpx.Response(200, json={"subscriptions": []})
    )
    clock = FixedClock(dt.datetime(2026, 3, 16, tzinfo=dt.UTC))
    client = ConnectorClient(
        clock=clock, transport=transport, policy=DEVELOPMENT, subscriptions_timeout_s=60
    )
    try:
        await client.put_subscriptions(
            "http://127.0.0.1:9",
            secrets=["whsec_" + "A" * 44],
            mailboxes=[f"r{n}@x.example" for n in range(10_000)],
            notification_url="http://127.0.0.1:9/graph/notifications",
            lifecycle_url="http://127.0.0.1:9/graph/lifecycle",
            client_state="state",
        )
    finally:
        await client.aclose()
    # 500 subscription writes per 20 s: 10,000 new mailboxes take Graph 400 s at least.
    assert seen[0].extensions["timeout"]["read"] == pytest.approx(60 + 400)
    assert client.subscriptions_timeout_s(0) == 60
