"""Change and lifecycle notifications end to end: calendar writes in the emulator (served by
uvicorn) reach a loopback receiver in Graph's exact shapes, bursts and batches; failures are
retried over a virtual 4 hours; lifecycle events follow expiry, removal and drops."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from loopback_kit import START, berlin_room, loopback_state, served

from graph_emulator.auth import issue_token
from graph_emulator.bench import LoopbackReceiver
from graph_emulator.directory import Mailbox
from graph_emulator.state import EmulatorState

SAMPLES = Path(__file__).resolve().parents[2] / "testdata" / "graph-samples"
NOTIFICATION_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


@dataclass
class Flow:
    state: EmulatorState
    client: httpx.AsyncClient
    receiver: LoopbackReceiver
    receiver_url: str
    room: Mailbox
    other_room: Mailbox

    def auth(self) -> dict[str, str]:
        app = self.state.apps.get("app-read")
        assert app is not None
        return {"Authorization": f"Bearer {issue_token(self.state, app)[0]}"}

    async def subscribe(self, room: Mailbox, **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "changeType": "created,updated,deleted",
            "notificationUrl": f"{self.receiver_url}/notify",
            "lifecycleNotificationUrl": f"{self.receiver_url}/lifecycle",
            "resource": f"users/{room.upn}/events",
            "expirationDateTime": (self.state.clock.now() + dt.timedelta(days=3)).isoformat(),
            "clientState": f"state-{room.display_name}",
            **overrides,
        }
        response = await self.client.post("/v1.0/subscriptions", json=body, headers=self.auth())
        assert response.status_code == 201, response.text
        return dict(response.json())

    def book(self, room: Mailbox, hour: int = 9, **extra: Any) -> dict[str, Any]:
        day = START.date() + dt.timedelta(days=1)
        body = {
            "subject": "Planning",
            "start": {"dateTime": f"{day}T{hour:02d}:00:00", "timeZone": "UTC"},
            "end": {"dateTime": f"{day}T{hour:02d}:30:00", "timeZone": "UTC"},
            **extra,
        }
        return self.state.calendars.create_event(room.id, body, organizer="adele@contoso.example")

    async def advance(self, **delta: float) -> None:
        self.state.clock.advance(dt.timedelta(**delta))
        for _ in range(5):
            await asyncio.sleep(0.01)


@pytest.fixture
async def flow() -> AsyncIterator[Flow]:
    rooms = [
        berlin_room(
            f"6b0e8d1c-2a3f-4b5c-9d8e-7f6a5b4c3d2{n}", f"room-{n}@contoso.example", f"Room {n}"
        )
        for n in (1, 2)
    ]
    state = loopback_state(seed=5, rooms=rooms)
    async with served(state) as up:
        yield Flow(state, up.client, up.receiver, up.receiver_url, rooms[0], rooms[1])


async def test_room_booking_burst_in_graphs_shape(flow: Flow) -> None:
    sub = await flow.subscribe(flow.room)
    event = flow.book(flow.room)
    await flow.receiver.wait_for(lambda: len(flow.receiver.items_at("/notify")) >= 4)
    items = flow.receiver.items_at("/notify")
    assert [i["changeType"] for i in items] == ["created", "updated", "updated", "updated"]
    template = sample("notification-batch.json")["value"][0]
    for item in items:
        assert list(item) == list(template)
        assert list(item["resourceData"]) == list(template["resourceData"])
        assert item["subscriptionId"] == sub["id"]
        assert item["clientState"] == "state-Room 1"
        assert item["tenantId"] == flow.state.tenant_id
        assert NOTIFICATION_TIME.match(item["subscriptionExpirationDateTime"])
        resource = f"Users/{flow.room.id}/Events/{event['id']}"
        assert item["resource"] == resource
        assert item["resourceData"]["@odata.type"] == "#Microsoft.Graph.Event"
        assert item["resourceData"]["@odata.id"] == resource
        assert item["resourceData"]["id"] == event["id"]
        assert item["resourceData"]["@odata.etag"] == f'W/"{event["changeKey"]}"'
    # Batched: the burst arrives in one POST, not four.
    assert len([p for p, _ in flow.receiver.posts if p == "/notify"]) == 1


async def test_one_post_batches_several_subscriptions_sharing_a_url(flow: Flow) -> None:
    first = await flow.subscribe(flow.room)
    second = await flow.subscribe(flow.other_room)
    flow.book(flow.room)
    flow.book(flow.other_room)
    await flow.receiver.wait_for(lambda: len(flow.receiver.items_at("/notify")) >= 8)
    batches = [batch for path, batch in flow.receiver.posts if path == "/notify"]
    assert len(batches) == 1
    assert {i["subscriptionId"] for i in batches[0]} == {first["id"], second["id"]}


async def test_occurrence_changes_are_reported_on_the_series_master(flow: Flow) -> None:
    await flow.subscribe(flow.room)
    series = flow.book(
        flow.room,
        recurrence={
            "pattern": {"type": "daily", "interval": 1},
            "range": {"type": "numbered", "startDate": "2026-11-24", "numberOfOccurrences": 5},
        },
    )
    await flow.receiver.wait_for(lambda: len(flow.receiver.items_at("/notify")) >= 4)
    flow.receiver.posts.clear()
    third = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)
    flow.state.calendars.update_occurrence(flow.room.id, series["id"], third, {"subject": "Moved"})
    flow.state.calendars.cancel_occurrence(flow.room.id, series["id"], third + dt.timedelta(days=1))
    await flow.receiver.wait_for(lambda: len(flow.receiver.items_at("/notify")) >= 6)
    items = flow.receiver.items_at("/notify")
    assert {i["changeType"] for i in items} == {"updated"}
    assert {i["resourceData"]["id"] for i in items} == {series["id"]}


async def test_deletion_burst_and_change_type_filter(flow: Flow) -> None:
    await flow.subscribe(flow.room, changeType="deleted")
    event = flow.book(flow.room)
    flow.state.calendars.delete_event(flow.room.id, event["id"])
    await flow.receiver.wait_for(lambda: len(flow.receiver.items_at("/notify")) >= 1)
    await asyncio.sleep(0.1)
    items = flow.receiver.items_at("/notify")
    assert [i["changeType"] for i in items] == ["deleted"]
    assert items[0]["resourceData"]["id"] == event["id"]
    assert items[0]["resourceData"]["@odata.etag"].startswith('W/"')


async def test_a_slow_receiver_never_slows_the_write(flow: Flow) -> None:
    await flow.subscribe(flow.room)
    flow.receiver.delay_s = 2.5
    begin = time.monotonic()
    response = await flow.client.post(
        f"/_emulator/mailboxes/{flow.room.upn}/bookings",
        json={
            "organizer": "adele@contoso.example",
            "start": "2026-11-24T10:00:00Z",
            "end": "2026-11-24T11:00:00Z",
        },
    )
    assert response.status_code == 201
    assert time.monotonic() - begin < 1.5
    await flow.receiver.wait_for(lambda: len(flow.receiver.items_at("/notify")) >= 4)


async def test_failing_endpoint_is_retried_for_four_hours_then_missed(flow: Flow) -> None:
    sub = await flow.subscribe(flow.room)
    flow.receiver.statuses["/notify"] = 500
    flow.book(flow.room)
    await flow.receiver.wait_for(lambda: len(flow.receiver.posts) >= 1)
    counters = flow.state.counters.named
    # 10-minute steps until the 4-hour window closes (bounded: at most 8 virtual hours).
    for _ in range(48):
        await flow.advance(minutes=10)
        if counters["notifications_dropped"]:
            break
    elapsed = flow.state.clock.now() - START
    # Given up once the next retry would fall past 4 hours (backoff is capped at 30 minutes).
    assert dt.timedelta(hours=3, minutes=30) <= elapsed <= dt.timedelta(hours=4, minutes=10)
    attempts = [p for p, _ in flow.receiver.posts if p == "/notify"]
    assert len(attempts) >= 6  # the first try and the backed-off retries
    assert counters["notifications_dropped"] == 4
    assert counters["notifications_retried"] == 4 * (len(attempts) - 1)
    await flow.receiver.wait_for(lambda: len(flow.receiver.items_at("/lifecycle")) >= 1)
    missed = flow.receiver.items_at("/lifecycle")
    assert [m["lifecycleEvent"] for m in missed] == ["missed"]
    template = sample("lifecycle-batch.json")["value"][1]
    assert list(missed[0]) == list(template)
    assert missed[0]["subscriptionId"] == sub["id"]
    assert missed[0]["clientState"] == "state-Room 1"
    assert missed[0]["tenantId"] == flow.state.tenant_id
    assert NOTIFICATION_TIME.match(missed[0]["subscriptionExpirationDateTime"])
    # Once the endpoint recovers, new changes flow again.
    flow.receiver.statuses.clear()
    flow.book(flow.room, hour=11)
    await flow.receiver.wait_for(lambda: counters["notifications_sent"] >= 4)


async def test_reauthorization_required_ahead_of_expiry_then_it_vanishes(flow: Flow) -> None:
    expiry = flow.state.clock.now() + dt.timedelta(hours=2)
    sub = await flow.subscribe(flow.room, expirationDateTime=expiry.isoformat())
    await flow.advance(minutes=10)
    assert flow.receiver.items_at("/lifecycle") == []
    await flow.advance(minutes=6)
    await flow.receiver.wait_for(lambda: len(flow.receiver.items_at("/lifecycle")) >= 1)
    events = flow.receiver.items_at("/lifecycle")
    assert events[0]["lifecycleEvent"] == "reauthorizationRequired"
    assert list(events[0]) == list(sample("lifecycle-batch.json")["value"][0])
    # Reauthorizing restarts the cadence: nothing more for the next 15 minutes.
    reauth = await flow.client.post(
        f"/v1.0/subscriptions/{sub['id']}/reauthorize", headers=flow.auth()
    )
    assert reauth.status_code == 204
    await flow.advance(minutes=10)
    assert len(flow.receiver.items_at("/lifecycle")) == 1
    for _ in range(12):
        await flow.advance(minutes=10)
    kinds = {e["lifecycleEvent"] for e in flow.receiver.items_at("/lifecycle")}
    assert kinds == {"reauthorizationRequired"}
    assert len(flow.receiver.items_at("/lifecycle")) >= 3
    gone = await flow.client.get(f"/v1.0/subscriptions/{sub['id']}", headers=flow.auth())
    assert gone.status_code == 404
    assert flow.state.counters.named["subscriptions_expired"] == 1


async def test_removal_by_the_control_api_sends_subscription_removed(flow: Flow) -> None:
    sub = await flow.subscribe(flow.room)
    removed = await flow.client.delete(f"/_emulator/subscriptions/{sub['id']}")
    assert removed.status_code == 204
    await flow.receiver.wait_for(lambda: len(flow.receiver.items_at("/lifecycle")) >= 1)
    event = flow.receiver.items_at("/lifecycle")[0]
    assert event["lifecycleEvent"] == "subscriptionRemoved"
    assert list(event) == list(sample("lifecycle-batch.json")["value"][2])
    gone = await flow.client.get(f"/v1.0/subscriptions/{sub['id']}", headers=flow.auth())
    assert gone.status_code == 404
    flow.book(flow.room)
    await asyncio.sleep(0.1)
    assert flow.receiver.items_at("/notify") == []
