"""``/v1.0/subscriptions`` against the emulator served by uvicorn on loopback, with a real
loopback webhook receiver answering (or failing) the validation handshake."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from loopback_kit import APP_SECRET, berlin_room, loopback_state, served

from graph_emulator.app import create_app
from graph_emulator.auth import READ, READ_BASIC, App, issue_token
from graph_emulator.bench import LoopbackReceiver, serve
from graph_emulator.directory import Mailbox
from graph_emulator.state import EmulatorState

SAMPLES = Path(__file__).resolve().parents[2] / "testdata" / "graph-samples"
TOKEN_TEXT = re.compile(
    r"^Validation: Testing client application reachability for subscription Request-Id: "
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
)


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


@dataclass
class Harness:
    state: EmulatorState
    base_url: str
    receiver: LoopbackReceiver
    receiver_url: str
    client: httpx.AsyncClient
    room: Mailbox
    other_room: Mailbox

    def auth(self, app_id: str = "app-read") -> dict[str, str]:
        app = self.state.apps.get(app_id)
        assert app is not None
        token, _ = issue_token(self.state, app)
        return {"Authorization": f"Bearer {token}"}

    def body(self, **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "changeType": "created,updated,deleted",
            "notificationUrl": f"{self.receiver_url}/notify?tenant=t1",
            "lifecycleNotificationUrl": f"{self.receiver_url}/lifecycle",
            "resource": f"users/{self.room.upn}/events",
            "expirationDateTime": (self.state.clock.now() + dt.timedelta(days=3)).isoformat(),
            "clientState": "secret-room-a1",
        }
        body.update(overrides)
        return {k: v for k, v in body.items() if v is not None}

    async def create(self, app_id: str = "app-read", **overrides: Any) -> httpx.Response:
        return await self.client.post(
            "/v1.0/subscriptions", json=self.body(**overrides), headers=self.auth(app_id)
        )


def build_state(**config: Any) -> tuple[EmulatorState, Mailbox, Mailbox]:
    room = berlin_room("6b0e8d1c-2a3f-4b5c-9d8e-7f6a5b4c3d2e", "room-a1@contoso.example", "Room A1")
    other = berlin_room(
        "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", "room-b2@contoso.example", "Room B2"
    )
    state = loopback_state(seed=3, rooms=[room, other], **config)
    state.apps.add(App("app-other", APP_SECRET, "other", roles={READ}))
    state.apps.add(App("app-basic", APP_SECRET, "basic", roles={READ_BASIC}))
    state.apps.add(App("app-scoped", APP_SECRET, "scoped", roles={READ}, mailbox_scope={other.id}))
    return state, room, other


@pytest.fixture
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    # Long enough for a loaded machine's handshake; the timeout test shortens it.
    config: dict[str, Any] = {"validation_timeout_s": 5.0}
    config.update(getattr(request, "param", {}))
    state, room, other = build_state(**config)
    async with served(state) as up:
        yield Harness(state, up.base_url, up.receiver, up.receiver_url, up.client, room, other)


async def test_create_runs_both_handshakes_and_answers_like_graph(harness: Harness) -> None:
    response = await harness.create()
    assert response.status_code == 201, response.text
    body = response.json()
    expected = sample("subscription-created.json")
    assert list(body) == list(expected)
    assert body["@odata.context"] == expected["@odata.context"]
    assert body["resource"] == "users/room-a1@contoso.example/events"
    assert body["applicationId"] == body["creatorId"] == "app-read"
    assert body["changeType"] == "created,updated,deleted"
    assert body["clientState"] == "secret-room-a1"
    assert body["notificationUrl"].endswith("/notify?tenant=t1")
    assert body["latestSupportedTlsVersion"] == "v1_2"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{7})?Z", body["expirationDateTime"])
    paths = [path for path, _ in harness.receiver.validations]
    assert paths == ["/notify", "/lifecycle"]
    for _, token in harness.receiver.validations:
        assert TOKEN_TEXT.match(token)


async def test_same_url_for_both_gets_two_validation_calls(harness: Harness) -> None:
    url = f"{harness.receiver_url}/hook"
    response = await harness.create(notificationUrl=url, lifecycleNotificationUrl=url)
    assert response.status_code == 201
    assert [p for p, _ in harness.receiver.validations] == ["/hook", "/hook"]


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("wrong", "must exactly match"),
        ("encoded", "must exactly match"),
        ("json", "must exactly match"),
        ("error", "must respond with 200 OK"),
        ("slow", "timed out"),
    ],
)
async def test_failed_handshake_is_400_and_creates_nothing(
    harness: Harness, mode: str, message: str
) -> None:
    harness.receiver.handshake = mode  # type: ignore[assignment]
    if mode == "slow":
        harness.state.config.validation_timeout_s = 0.5
        harness.receiver.handshake_delay_s = 1.0
    response = await harness.create()
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "ValidationError"
    assert message in error["message"]
    listed = await harness.client.get("/v1.0/subscriptions", headers=harness.auth())
    assert listed.json()["value"] == []


async def test_lifecycle_url_failing_its_handshake_fails_the_create(harness: Harness) -> None:
    response = await harness.create(lifecycleNotificationUrl=f"{harness.base_url}/nowhere")
    assert response.status_code == 400
    assert [p for p, _ in harness.receiver.validations] == ["/notify"]


async def test_http_notification_urls_need_the_setting() -> None:
    state, room, _ = build_state(allow_http_notifications=False)
    async with serve(create_app(state)) as base_url, httpx.AsyncClient(base_url=base_url) as c:
        app = state.apps.get("app-read")
        assert app is not None
        token, _ = issue_token(state, app)
        response = await c.post(
            "/v1.0/subscriptions",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "changeType": "created",
                "notificationUrl": "http://127.0.0.1:9/notify",
                "resource": f"users/{room.id}/events",
                "expirationDateTime": (state.clock.now() + dt.timedelta(hours=2)).isoformat(),
            },
        )
    assert response.status_code == 400
    assert "https" in response.json()["error"]["message"]


async def test_duplicate_resource_and_change_type_is_409(harness: Harness) -> None:
    first = await harness.create()
    assert first.status_code == 201
    again = await harness.create(resource=f"Users/{harness.room.id}/calendar/events")
    assert again.status_code == 409
    message = again.json()["error"]["message"]
    assert f"Subscription Id {first.json()['id']} already exists" in message
    other_kinds = await harness.create(changeType="deleted")
    assert other_kinds.status_code == 201
    other_app = await harness.create("app-other")
    assert other_app.status_code == 201


async def test_expiration_bounds(harness: Harness) -> None:
    now = harness.state.clock.now()
    too_far = await harness.create(
        expirationDateTime=(now + dt.timedelta(minutes=10_081)).isoformat()
    )
    assert too_far.status_code == 400
    assert "10080 minutes" in too_far.json()["error"]["message"]
    soon = await harness.create(expirationDateTime=(now + dt.timedelta(minutes=5)).isoformat())
    assert soon.status_code == 201
    expiry = dt.datetime.fromisoformat(soon.json()["expirationDateTime"].replace("Z", "+00:00"))
    # The virtual clock also runs in real time, so allow for the request's duration.
    assert dt.timedelta(0) <= expiry - (now + dt.timedelta(minutes=45)) < dt.timedelta(seconds=5)


async def test_longest_allowed_expiration_is_kept(harness: Harness) -> None:
    wanted = (harness.state.clock.now() + dt.timedelta(minutes=10_079)).replace(microsecond=0)
    response = await harness.create(
        expirationDateTime=wanted.strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    )
    assert response.status_code == 201
    assert response.json()["expirationDateTime"] == wanted.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_client_state_length(harness: Harness) -> None:
    assert (await harness.create(clientState="x" * 129)).status_code == 400
    assert (await harness.create(clientState="x" * 128)).status_code == 201


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        ("me/events", "/me request is only valid with delegated authentication flow."),
        ("users/room-a1@contoso.example/events/AAMkAD1", "parameter 'Resource' is not supported"),
        ("users/room-a1@contoso.example/calendarView", "parameter 'Resource' is not supported"),
    ],
)
async def test_unsupported_resources(harness: Harness, resource: str, message: str) -> None:
    response = await harness.create(resource=resource)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
    assert harness.receiver.validations == []


async def test_unknown_mailbox_is_404(harness: Harness) -> None:
    response = await harness.create(resource="users/nobody@contoso.example/events")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "ErrorInvalidUser"


async def test_calendars_read_on_that_mailbox_is_required(harness: Harness) -> None:
    basic = await harness.create("app-basic")
    assert basic.status_code == 403
    out_of_scope = await harness.create("app-scoped")
    assert out_of_scope.status_code == 403
    in_scope = await harness.create("app-scoped", resource=f"users/{harness.other_room.id}/events")
    assert in_scope.status_code == 201


async def test_bad_bodies_get_graph_errors(harness: Harness) -> None:
    malformed = await harness.client.post(
        "/v1.0/subscriptions", content=b"{nope", headers=harness.auth()
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "BadRequest"
    missing = await harness.create(notificationUrl=None)
    assert missing.status_code == 400
    assert "notificationUrl" in missing.json()["error"]["message"]
    kinds = await harness.create(changeType="created,moved")
    assert kinds.status_code == 400
    unauthenticated = await harness.client.post("/v1.0/subscriptions", json=harness.body())
    assert unauthenticated.status_code == 401


@pytest.mark.parametrize("harness", [{"subscriptions_per_mailbox": 2}], indirect=True)
async def test_subscriptions_per_mailbox_quota_across_apps(harness: Harness) -> None:
    assert (await harness.create("app-read")).status_code == 201
    assert (await harness.create("app-other")).status_code == 201
    third = await harness.create("app-read", changeType="deleted")
    assert third.status_code == 403
    assert (
        await harness.create("app-read", resource=f"users/{harness.other_room.upn}/events")
    ).status_code == 201


async def test_list_and_get_are_scoped_to_the_calling_app(harness: Harness) -> None:
    mine = (await harness.create("app-read")).json()["id"]
    theirs = (await harness.create("app-other")).json()["id"]
    listed = await harness.client.get("/v1.0/subscriptions", headers=harness.auth("app-read"))
    assert listed.status_code == 200
    assert [s["id"] for s in listed.json()["value"]] == [mine]
    got = await harness.client.get(f"/v1.0/subscriptions/{mine}", headers=harness.auth())
    assert got.status_code == 200
    assert got.json()["id"] == mine
    other = await harness.client.get(f"/v1.0/subscriptions/{theirs}", headers=harness.auth())
    assert other.status_code == 404


async def test_renew_reauthorize_delete(harness: Harness) -> None:
    sub_id = (await harness.create()).json()["id"]
    new_expiry = (harness.state.clock.now() + dt.timedelta(days=6)).replace(microsecond=0)
    renewed = await harness.client.patch(
        f"/v1.0/subscriptions/{sub_id}",
        json={"expirationDateTime": new_expiry.isoformat()},
        headers=harness.auth(),
    )
    assert renewed.status_code == 200
    assert renewed.json()["expirationDateTime"] == new_expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
    not_patchable = await harness.client.patch(
        f"/v1.0/subscriptions/{sub_id}",
        json={"lifecycleNotificationUrl": f"{harness.receiver_url}/other"},
        headers=harness.auth(),
    )
    assert not_patchable.status_code == 400
    # Reauthorizing right after a renewal is refused (below); 10 minutes later it is fine.
    harness.state.clock.advance(dt.timedelta(minutes=10))
    reauth = await harness.client.post(
        f"/v1.0/subscriptions/{sub_id}/reauthorize", headers=harness.auth()
    )
    assert reauth.status_code == 204
    assert reauth.content == b""
    deleted = await harness.client.delete(f"/v1.0/subscriptions/{sub_id}", headers=harness.auth())
    assert deleted.status_code == 204
    gone = await harness.client.get(f"/v1.0/subscriptions/{sub_id}", headers=harness.auth())
    assert gone.status_code == 404
    reauth_gone = await harness.client.post(
        f"/v1.0/subscriptions/{sub_id}/reauthorize", headers=harness.auth()
    )
    assert reauth_gone.status_code == 404


async def test_renewing_to_a_new_url_validates_it(harness: Harness) -> None:
    sub_id = (await harness.create()).json()["id"]
    harness.receiver.validations.clear()
    moved = await harness.client.patch(
        f"/v1.0/subscriptions/{sub_id}",
        json={"notificationUrl": f"{harness.receiver_url}/moved"},
        headers=harness.auth(),
    )
    assert moved.status_code == 200
    assert [p for p, _ in harness.receiver.validations] == ["/moved"]


async def test_expired_subscription_vanishes_and_patch_is_404(harness: Harness) -> None:
    expiry = harness.state.clock.now() + dt.timedelta(hours=1)
    sub_id = (await harness.create(expirationDateTime=expiry.isoformat())).json()["id"]
    harness.state.clock.advance(dt.timedelta(hours=1, seconds=1))
    listed = await harness.client.get("/v1.0/subscriptions", headers=harness.auth())
    assert listed.json()["value"] == []
    patched = await harness.client.patch(
        f"/v1.0/subscriptions/{sub_id}",
        json={"expirationDateTime": (harness.state.clock.now() + dt.timedelta(days=1)).isoformat()},
        headers=harness.auth(),
    )
    assert patched.status_code == 404
    # And it no longer counts: the same resource can be subscribed again.
    assert (await harness.create()).status_code == 201


async def test_list_is_rate_limited_per_app(harness: Harness) -> None:
    for _ in range(25):
        ok = await harness.client.get("/v1.0/subscriptions", headers=harness.auth())
        assert ok.status_code == 200
    limited = await harness.client.get("/v1.0/subscriptions", headers=harness.auth())
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    other = await harness.client.get("/v1.0/subscriptions", headers=harness.auth("app-other"))
    assert other.status_code == 200
    harness.state.clock.advance(dt.timedelta(seconds=21))
    again = await harness.client.get("/v1.0/subscriptions", headers=harness.auth())
    assert again.status_code == 200


async def test_concurrent_duplicates_yield_one_subscription(harness: Harness) -> None:
    harness.receiver.handshake_delay_s = 0.2  # both creates are validating at once
    first, second = await asyncio.gather(harness.create(), harness.create())
    assert sorted([first.status_code, second.status_code]) == [201, 409]
    listed = await harness.client.get("/v1.0/subscriptions", headers=harness.auth())
    assert len(listed.json()["value"]) == 1


@pytest.mark.parametrize(
    "body_change",
    [
        # Graph reads JSON property names case-sensitively: these are unknown properties.
        {"clientstate": "secret-room-a1", "clientState": None},
        {"lifecycleNotificationURL": "https://relay.example/lifecycle"},
        {"NotificationUrl": "https://relay.example/notify"},
        {"changetype": "created"},
        {"expiration": "2026-03-20T08:00:00Z"},
    ],
    ids=["clientstate", "lifecycleNotificationURL", "NotificationUrl", "changetype", "unknown"],
)
async def test_unknown_or_miscased_properties_are_refused(
    harness: Harness, body_change: dict[str, Any]
) -> None:
    body = harness.body(**body_change)
    response = await harness.client.post("/v1.0/subscriptions", json=body, headers=harness.auth())
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "RequestBodyRead"
    unknown = next(k for k, v in body_change.items() if v is not None)
    assert f"'{unknown}' does not exist on type 'microsoft.graph.subscription'" in error["message"]
    assert harness.receiver.validations == []
    assert harness.state.counters.named.get("subscriptions_created", 0) == 0


@pytest.mark.parametrize(
    "expiration",
    ["2026-03-20 08:00:00Z", "03/20/2026 08:00", "2026-03-20", "20260320T080000Z", "tomorrow"],
)
async def test_expiration_must_be_an_odata_date_time_offset(
    harness: Harness, expiration: str
) -> None:
    response = await harness.create(expirationDateTime=expiration)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "RequestBodyRead"
    assert "Edm.DateTimeOffset" in response.json()["error"]["message"]


async def test_patch_refuses_unknown_properties_too(harness: Harness) -> None:
    created = await harness.create()
    assert created.status_code == 201
    sub_id = created.json()["id"]
    expiry = (harness.state.clock.now() + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    miscased = await harness.client.patch(
        f"/v1.0/subscriptions/{sub_id}",
        json={"expirationdatetime": expiry},
        headers=harness.auth(),
    )
    assert miscased.status_code == 400
    assert miscased.json()["error"]["code"] == "RequestBodyRead"
    fixed = await harness.client.patch(
        f"/v1.0/subscriptions/{sub_id}", json={"resource": "users/x/events"}, headers=harness.auth()
    )
    # A real property that PATCH cannot change keeps its own message.
    assert fixed.status_code == 400
    assert "cannot be updated" in fixed.json()["error"]["message"]


async def test_reauthorize_and_renew_are_never_both_within_10_minutes(harness: Harness) -> None:
    sub_id = (await harness.create()).json()["id"]
    path = f"/v1.0/subscriptions/{sub_id}"

    async def renew() -> httpx.Response:
        expiry = harness.state.clock.now() + dt.timedelta(days=5)
        return await harness.client.patch(
            path,
            json={"expirationDateTime": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")},
            headers=harness.auth(),
        )

    async def reauthorize() -> httpx.Response:
        return await harness.client.post(path + "/reauthorize", headers=harness.auth())

    assert (await reauthorize()).status_code == 204
    # The same kind again is allowed; the other kind is not, until 10 minutes have passed.
    assert (await reauthorize()).status_code == 204
    harness.state.clock.advance(dt.timedelta(minutes=9, seconds=50))
    refused = await renew()
    assert refused.status_code == 409
    assert "within 10 minutes" in refused.json()["error"]["message"]
    harness.state.clock.advance(dt.timedelta(seconds=15))
    assert (await renew()).status_code == 200
    assert (await renew()).status_code == 200
    harness.state.clock.advance(dt.timedelta(minutes=5))
    assert (await reauthorize()).status_code == 409
    harness.state.clock.advance(dt.timedelta(minutes=5))
    assert (await reauthorize()).status_code == 204


@pytest.mark.parametrize(
    "harness",
    [{"subscription_writes_per_app_tenant": 3, "subscription_writes_per_app": 10}],
    indirect=True,
)
async def test_writes_share_one_budget_per_app_and_tenant(harness: Harness) -> None:
    # POST, PATCH and DELETE all count as writes; a refused write spends nothing.
    created = await harness.create()
    assert created.status_code == 201
    sub_id = created.json()["id"]
    expiry = (harness.state.clock.now() + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    patched = await harness.client.patch(
        f"/v1.0/subscriptions/{sub_id}", json={"expirationDateTime": expiry}, headers=harness.auth()
    )
    assert patched.status_code == 200
    other_room = await harness.create(resource=f"users/{harness.other_room.upn}/events")
    assert other_room.status_code == 201
    limited = await harness.client.delete(f"/v1.0/subscriptions/{sub_id}", headers=harness.auth())
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "TooManyRequests"
    assert 1 <= int(limited.headers["Retry-After"]) <= 20
    assert harness.state.counters.named["subscription_writes_throttled"] == 1
    # The peak shows how full the budget got: all of it, and no more.
    assert harness.state.counters.named["subscription_writes_peak"] == 3
    # Reads have budgets of their own; so does every other app.
    assert (
        await harness.client.get(f"/v1.0/subscriptions/{sub_id}", headers=harness.auth())
    ).status_code == 200
    assert (await harness.create("app-other")).status_code == 201
    harness.state.clock.advance(dt.timedelta(seconds=int(limited.headers["Retry-After"])))
    deleted = await harness.client.delete(f"/v1.0/subscriptions/{sub_id}", headers=harness.auth())
    assert deleted.status_code == 204


@pytest.mark.parametrize(
    "harness",
    [
        {
            "subscription_writes_per_app_tenant": 10,
            "subscription_writes_per_app": 2,
            "subscription_list_per_app_tenant": 10,
            "subscription_list_per_app": 3,
        }
    ],
    indirect=True,
)
async def test_the_per_app_budgets_bind_too(harness: Harness) -> None:
    # With one tenant the per-app budgets (2,000 writes, 40 listings) are above the
    # per-app-and-tenant ones; set lower, they are enforced on their own.
    assert (await harness.create()).status_code == 201
    assert (await harness.create(changeType="deleted")).status_code == 201
    third = await harness.create(changeType="created")
    assert third.status_code == 429
    listed = [
        (await harness.client.get("/v1.0/subscriptions", headers=harness.auth())).status_code
        for _ in range(4)
    ]
    assert listed == [200, 200, 200, 429]
    counters = harness.state.counters.named
    assert counters["subscription_writes_throttled"] == 1
    assert counters["subscription_list_throttled"] == 1
    assert counters["subscription_api_throttled"] == 2
