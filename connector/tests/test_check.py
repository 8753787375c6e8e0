from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from bookingcache_connector.app import create_app
from bookingcache_connector.bootstrap import Connector
from bookingcache_connector.check import Finding, check_notification_url, run_check

from .fakes import FakeGraph

ROOMS = ["room-a1@contoso.example", "room-b2@contoso.example"]


async def checked(
    connector: Connector,
    urls: list[tuple[str, str]] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[Finding]:
    async with httpx.AsyncClient(
        transport=transport or httpx.ASGITransport(app=create_app(connector))
    ) as http:
        return await run_check(
            tokens=connector.tokens,
            graph=connector.graph,
            clock=connector.clock,
            http=http,
            mailboxes=ROOMS,
            notification_urls=urls or [],
        )


async def test_all_good(make_connector: Any, graph: FakeGraph) -> None:
    connector = make_connector()
    findings = await checked(
        connector,
        [
            ("notificationUrl", "https://relay.test/graph/notifications"),
            ("lifecycleNotificationUrl", "https://relay.test/graph/lifecycle"),
        ],
    )
    assert all(f.ok for f in findings), findings
    assert graph.subscriptions == {}  # the test subscription was removed again
    assert [m for m, p in graph.requests if p.startswith("/subscriptions")] == ["POST", "DELETE"]
    assert [f.check for f in findings] == [
        "credentials",
        *(f"mailbox {m}" for m in ROOMS),
        "subscriptions",
        "notificationUrl",
        "lifecycleNotificationUrl",
    ]


async def test_bad_credentials(make_connector: Any, graph: FakeGraph) -> None:
    findings = await checked(make_connector(secret="rotated-yesterday"))
    assert [(f.check, f.ok) for f in findings] == [("credentials", False)]
    assert "bad credentials" in findings[0].detail
    assert "invalid_client" in findings[0].detail
    assert "secret or certificate" in findings[0].detail
    assert graph.requests == []


async def test_missing_calendars_read(make_connector: Any, graph: FakeGraph) -> None:
    graph.no_permission = True
    findings = await checked(make_connector())
    assert [(f.check, f.ok) for f in findings] == [
        ("credentials", True),
        ("permission Calendars.Read", False),
    ]
    assert "missing Calendars.Read" in findings[1].detail
    assert "'Calendars.Read'" in findings[1].detail  # the roles the token did carry are shown


async def test_mailbox_outside_rbac_scope(make_connector: Any, graph: FakeGraph) -> None:
    graph.denied.add(ROOMS[1])
    findings = await checked(make_connector())
    assert [(f.check, f.ok) for f in findings] == [
        ("credentials", True),
        (f"mailbox {ROOMS[0]}", True),
        (f"mailbox {ROOMS[1]}", False),
    ]
    assert "outside the RBAC scope" in findings[2].detail
    assert f"Test-ServicePrincipalAuthorization -Resource {ROOMS[1]}" in findings[2].detail


async def test_notification_url_failures() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        token = unquote(urlsplit(str(request.url)).query.split("validationToken=", 1)[1])
        if host == "down.test":
            raise httpx.ConnectError("connection refused", request=request)
        if host == "slow.test":
            raise httpx.ReadTimeout("timed out", request=request)
        if host == "error.test":
            return httpx.Response(500, text="oops")
        if host == "json.test":
            return httpx.Response(200, json={"validationToken": token})
        if host == "encoded.test":
            return httpx.Response(
                200, text=request.url.params["validationToken"].replace(" ", "%20")
            )
        return httpx.Response(200, text=token, headers={"content-type": "text/plain"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        results = {
            host: await check_notification_url(http, f"https://{host}/hook?tenant=t1")
            for host in (
                "down.test",
                "slow.test",
                "error.test",
                "json.test",
                "encoded.test",
                "ok.test",
            )
        }
    assert {h: r.ok for h, r in results.items()} == {
        "down.test": False,
        "slow.test": False,
        "error.test": False,
        "json.test": False,
        "encoded.test": False,
        "ok.test": True,
    }
    assert "unreachable" in results["down.test"].detail
    assert "10 s" in results["slow.test"].detail
    assert "answered 500" in results["error.test"].detail
    assert "not text/plain" in results["json.test"].detail
    assert "did not echo" in results["encoded.test"].detail


async def test_read_basic_only_cannot_subscribe(make_connector: Any, graph: FakeGraph) -> None:
    graph.read_basic_only = True
    findings = await checked(
        make_connector(), [("notificationUrl", "https://relay.test/graph/notifications")]
    )
    failed = [f for f in findings if not f.ok]
    assert [f.check for f in failed] == ["permission Calendars.Read"]
    assert "Calendars.ReadBasic is not enough" in failed[0].detail
    assert graph.subscriptions == {}
