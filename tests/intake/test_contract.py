"""The contract from the other side: the connector's own relay client, signing with its own
signer, is accepted by the service, and its pushed window lands in the cache."""

from __future__ import annotations

import base64
import datetime as dt

import httpx
import pytest
from fastapi import FastAPI

from bookingcache.clock import FixedClock
from bookingcache.contract.signing import SignatureVerifier, sign_request
from bookingcache.domain.tenancy import EventSource
from bookingcache.errors import BadSignature
from bookingcache.store.sql.store import SqlStore
from bookingcache_connector.service import ServiceClient
from bookingcache_connector.signing import SignatureError, Signer, Verifier
from tests.support.inbox import stored_notifications
from tests.support.tenants import add_org


class ConnectorClock:
    """The service's test clock in the shape of the connector's clock."""

    def __init__(self, clock: FixedClock) -> None:
        self._clock = clock

    def now(self) -> dt.datetime:
        return self._clock.now()

    async def sleep(self, seconds: float) -> None:
        self._clock.advance(dt.timedelta(seconds=seconds))


async def test_the_connector_relay_client_is_accepted(
    app: FastAPI, store: SqlStore, clock: FixedClock
) -> None:
    org = await add_org(store, source=EventSource.PUSH, connector_url=None)
    mailbox = org.mailboxes[0]
    payload = {
        "changes": [{"mailbox": mailbox, "subscriptionId": "sub-1", "changeType": "updated"}],
        "lifecycle": [],
        "resync": [],
        "windows": [
            {
                "mailbox": mailbox,
                "start": "2026-11-23T00:00:00Z",
                "end": "2026-12-07T00:00:00Z",
                "events": [
                    {
                        "id": "evt-1",
                        "start": "2026-11-24T10:00:00Z",
                        "end": "2026-11-24T11:00:00Z",
                        "isAllDay": False,
                        "showAs": "busy",
                        "isCancelled": False,
                        "subject": "Stand-up",
                        "sensitivity": "normal",
                        "type": "singleInstance",
                        "seriesMasterId": None,
                    }
                ],
            }
        ],
    }
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
        relay = ServiceClient(
            base_url="http://service",
            tenant=org.id,
            signer=Signer(org.secret, ConnectorClock(clock)),
            http=http,
        )
        await relay.notify(payload)  # raises DeliveryError unless answered 2xx
    stored = await stored_notifications(store)
    assert [(n.entry["mailbox"], n.source) for n in stored] == [(mailbox, "alt2")]
    cached = await store.events_in_window(
        org.id,
        [mailbox],
        start=dt.datetime(2026, 11, 23, tzinfo=dt.UTC),
        end=dt.datetime(2026, 12, 7, tzinfo=dt.UTC),
    )
    assert [event.id for event in cached[mailbox]] == ["evt-1"]


def test_a_call_signed_during_a_rotation_verifies_with_either_secret() -> None:
    """During a signing-secret rotation the service signs its calls with both secrets, and the
    connector accepts them whichever of the two it is configured with; a third does not."""
    now = dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.UTC)
    new, old, other = (f"whsec_{base64.b64encode(bytes([n]) * 32).decode()}" for n in (1, 2, 3))
    target = "/v1/calendars/room%40x.example/events?start=2026-03-29T00:00:00Z"
    request = httpx.Request("GET", f"https://connector.example{target}")
    sign_request(request, secrets=[new, old], now=now)
    assert len(request.headers["webhook-signature"].split()) == 2
    for secret in (new, old):
        Verifier(secret, FixedClock(now)).verify("GET", target, request.headers, b"")
        service_side = SignatureVerifier(clock=FixedClock(now))
        service_side.verify(
            tenant_id="t",
            secrets=[secret],
            method="GET",
            path_with_query=target,
            headers=request.headers,
            body=b"",
        )
    with pytest.raises(SignatureError):
        Verifier(other, FixedClock(now)).verify("GET", target, request.headers, b"")
    with pytest.raises(BadSignature):
        SignatureVerifier(clock=FixedClock(now)).verify(
            tenant_id="t",
            secrets=[other],
            method="GET",
            path_with_query=target,
            headers=request.headers,
            body=b"",
        )


def test_a_connector_given_both_secrets_signs_with_both_and_accepts_either() -> None:
    """The connector's side of a rotation (CONNECTOR_WEBHOOK_SECRET="new,old"): the service
    accepts its calls whichever secret it holds, and it accepts the service's calls signed with
    either, as before the rotation (old) or after the overlap (new)."""
    now = dt.datetime(2026, 10, 25, 0, 45, tzinfo=dt.UTC)
    new, old = (f"whsec_{base64.b64encode(bytes([n]) * 32).decode()}" for n in (4, 5))
    target = "/v1/tenants/acme/notifications"
    body = b'{"changes": [], "lifecycle": [], "resync": []}'
    headers = Signer(f"{new},{old}", FixedClock(now)).headers("POST", target, body)
    assert len(headers["webhook-signature"].split()) == 2
    for secrets in ([old], [new]):
        SignatureVerifier(clock=FixedClock(now)).verify(
            tenant_id="acme",
            secrets=secrets,
            method="POST",
            path_with_query=target,
            headers=headers,
            body=body,
        )
    for secret in (old, new):
        request = httpx.Request("GET", f"https://connector.example{target}")
        sign_request(request, secrets=[secret], now=now)
        Verifier(f"{new}, {old}", FixedClock(now)).verify("GET", target, request.headers, b"")
