"""Who may open a change stream: the tenant's read token or the admin token as a bearer, or a
ticket issued for the tenant and not yet expired; nothing else gets an event."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import httpx
import pytest
from fastapi import FastAPI

from bookingcache.clock import FixedClock
from bookingcache.store.port import Store
from bookingcache.telemetry.logs import JsonFormatter, TextFormatter
from tests.stream.conftest import StreamTenant, make_tenant
from tests.support.auth import ADMIN
from tests.support.sse import open_stream


async def _refused(http: httpx.AsyncClient, url: str, **kw: object) -> httpx.Response:
    response = await http.get(url, **kw)  # type: ignore[arg-type]
    assert response.headers["content-type"] == "application/problem+json", response.text
    assert "event:" not in response.text
    return response


async def test_tickets_and_tokens_of_another_tenant_get_nothing(
    served: tuple[FastAPI, str], tenant: StreamTenant, http: httpx.AsyncClient, clock: FixedClock
) -> None:
    store: Store = served[0].state.services.store
    other = await make_tenant(http, store, clock, rooms={"x1": ("HQ", "1")})

    foreign_ticket = await other.ticket()
    response = await _refused(http, tenant.url, params={"ticket": foreign_ticket})
    assert response.status_code == 403
    response = await _refused(http, tenant.url, headers=other.reader)
    assert response.status_code == 403

    response = await _refused(http, tenant.url)
    assert response.status_code == 401
    response = await _refused(http, tenant.url, params={"ticket": foreign_ticket + "x"})
    assert (response.status_code, response.json()["type"]) == (
        401,
        "urn:bookingcache:problem:bad-stream-ticket",
    )
    # A ticket is issued only for the read token's own tenant.
    response = await http.post(f"/v1/tenants/{tenant.id}/stream/tickets", headers=other.reader)
    assert response.status_code == 403
    response = await http.post(f"/v1/tenants/{tenant.id}/stream/tickets")
    assert response.status_code == 401

    # The admin token may follow any tenant.
    async with open_stream(http, tenant.url, headers=ADMIN, room="r1") as stream:
        [snapshot] = await stream.wait(1)
    assert [room["room"] for room in snapshot.json["rooms"]] == ["r1"]


async def test_an_expired_ticket_is_refused_and_an_open_stream_stays_open(
    tenant: StreamTenant, http: httpx.AsyncClient, clock: FixedClock
) -> None:
    ticket = await tenant.ticket()
    async with open_stream(http, tenant.url, ticket=ticket) as stream:
        await stream.wait(1)
        clock.advance(dt.timedelta(seconds=61))
        response = await _refused(http, tenant.url, params={"ticket": ticket})
        assert response.status_code == 401
        assert "expired" in response.json()["detail"]
        # The stream opened before still hears of changes.
        await tenant.book("r1@contoso.example", "Still here", "09:00", "11:00")
        events = await stream.wait(2)
        assert events[1].json["current"]["title"] == "Still here"


async def test_a_deleted_tenants_ticket_stops_working(
    tenant: StreamTenant, http: httpx.AsyncClient
) -> None:
    ticket = await tenant.ticket()
    async with open_stream(http, tenant.url, ticket=ticket) as stream:
        await stream.wait(1)
        response = await http.delete(f"/v1/tenants/{tenant.id}", headers=ADMIN)
        assert response.status_code == 204, response.text
        # Its open streams end.
        assert stream._reader is not None
        await asyncio.wait_for(stream._reader, 10)
    response = await _refused(http, tenant.url, params={"ticket": ticket})
    assert response.status_code == 401


async def test_a_revoked_read_token_gets_no_ticket_and_no_stream(
    tenant: StreamTenant, http: httpx.AsyncClient
) -> None:
    """Tickets belong to the tenant, not to the token that asked for one: a ticket issued before
    the token was revoked opens the stream until it expires (60 s), and the revoked token itself
    neither gets a new ticket nor opens the stream."""
    made = await http.post(
        f"/v1/tenants/{tenant.id}/read-tokens", json={"name": "lobby"}, headers=ADMIN
    )
    assert made.status_code == 201, made.text
    lobby = {"Authorization": f"Bearer {made.json()['token']}"}
    issued = await http.post(f"/v1/tenants/{tenant.id}/stream/tickets", headers=lobby)
    assert issued.status_code == 201, issued.text
    revoked = await http.delete(f"/v1/tenants/{tenant.id}/read-tokens/lobby", headers=ADMIN)
    assert revoked.status_code == 204, revoked.text
    refused = await http.post(f"/v1/tenants/{tenant.id}/stream/tickets", headers=lobby)
    assert refused.status_code == 401, refused.text
    assert (await _refused(http, tenant.url, headers=lobby)).status_code == 401
    async with open_stream(http, tenant.url, ticket=issued.json()["ticket"]) as stream:
        await stream.wait(1)
    # The tenant's other token is untouched (``ticket`` requires its 201).
    await tenant.ticket()


async def test_a_bad_last_event_id_is_refused(
    tenant: StreamTenant, http: httpx.AsyncClient
) -> None:
    headers = {**tenant.reader, "Last-Event-ID": "abc"}
    response = await _refused(http, tenant.url, headers=headers)
    assert response.status_code == 422
    response = await _refused(http, tenant.url, headers=tenant.reader, params={"floor": "1"})
    assert response.status_code == 422


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()])
def test_a_ticket_in_a_request_target_never_reaches_a_log_line(
    formatter: logging.Formatter,
) -> None:
    ticket = "st1.dC1hYmMKMjAyNgo.c2lnbmF0dXJl-value"
    record = logging.LogRecord(
        "bookingcache.test",
        logging.WARNING,
        __file__,
        1,
        "GET %s and %s failed",
        (
            f"/v1/tenants/t/stream?ticket={ticket}&room=r1",
            f"https://api.example/x?a=1&ticket={ticket}",
        ),
        None,
    )
    line = formatter.format(record)
    assert ticket not in line
    assert "/v1/tenants/t/stream?ticket=***&room=r1" in line
