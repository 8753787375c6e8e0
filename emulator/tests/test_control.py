"""The ``/_emulator`` control API over real HTTP: notification and mailbox faults, delta token
expiry, delivery pause, counters, the virtual clock, and calendar changes made as users would."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from loopback_kit import berlin_room, loopback_state, served

from graph_emulator.app import create_app
from graph_emulator.auth import issue_token
from graph_emulator.bench import LoopbackReceiver, serve
from graph_emulator.config import EmulatorConfig
from graph_emulator.directory import Mailbox
from graph_emulator.state import EmulatorState, new_state

SAMPLES = Path(__file__).resolve().parents[2] / "testdata" / "graph-samples"
VIEW = "startDateTime=2026-11-23T00:00:00Z&endDateTime=2026-11-30T00:00:00Z"


@dataclass
class Ctl:
    state: EmulatorState
    client: httpx.AsyncClient
    receiver: LoopbackReceiver
    receiver_url: str
    room: Mailbox

    def auth(self) -> dict[str, str]:
        app = self.state.apps.get("app-read")
        assert app is not None
        return {"Authorization": f"Bearer {issue_token(self.state, app)[0]}"}

    async def subscribe(self) -> str:
        response = await self.client.post(
            "/v1.0/subscriptions",
            headers=self.auth(),
            json={
                "changeType": "created,updated,deleted",
                "notificationUrl": f"{self.receiver_url}/notify",
                "lifecycleNotificationUrl": f"{self.receiver_url}/lifecycle",
                "resource": f"users/{self.room.upn}/events",
                "expirationDateTime": (self.state.clock.now() + dt.timedelta(days=2)).isoformat(),
                "clientState": "ctl",
            },
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def book(self, hour: int = 9, **extra: Any) -> dict[str, Any]:
        response = await self.client.post(
            f"/_emulator/mailboxes/{self.room.upn}/bookings",
            json={
                "organizer": "adele@contoso.example",
                "subject": "Quarterly planning",
                "start": f"2026-11-24T{hour:02d}:00:00Z",
                "end": f"2026-11-24T{hour:02d}:30:00Z",
                **extra,
            },
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def fault(self, path: str, **body: Any) -> httpx.Response:
        return await self.client.post(f"/_emulator/faults/{path}", json=body)

    def notified(self) -> list[dict[str, Any]]:
        return self.receiver.items_at("/notify")


@pytest.fixture
async def ctl() -> AsyncIterator[Ctl]:
    room = berlin_room("6b0e8d1c-2a3f-4b5c-9d8e-7f6a5b4c3d2e", "room-a1@contoso.example", "Room A1")
    state = loopback_state(seed=9, rooms=[room])
    async with served(state) as up:
        yield Ctl(state, up.client, up.receiver, up.receiver_url, room)


async def test_drop_next_notification_sends_missed(ctl: Ctl) -> None:
    sub = await ctl.subscribe()
    created = await ctl.fault("notifications", kind="drop", count=1)
    assert created.status_code == 201
    assert created.json()["remaining"] == 1
    await ctl.book()
    await ctl.receiver.wait_for(lambda: len(ctl.notified()) >= 3)
    await ctl.receiver.wait_for(lambda: len(ctl.receiver.items_at("/lifecycle")) >= 1)
    assert [i["changeType"] for i in ctl.notified()] == ["updated"] * 3
    missed = ctl.receiver.items_at("/lifecycle")
    assert [(m["lifecycleEvent"], m["subscriptionId"]) for m in missed] == [("missed", sub)]
    faults = (await ctl.client.get("/_emulator/faults")).json()
    assert faults["notifications"] == {}
    counters = (await ctl.client.get("/_emulator/counters")).json()
    assert counters["notifications_dropped"] == 1
    assert counters["notifications_sent"] == 3


async def test_duplicate_and_delay_faults(ctl: Ctl) -> None:
    await ctl.subscribe()
    assert (await ctl.fault("notifications", kind="duplicate", count=2)).status_code == 201
    await ctl.book()
    await ctl.receiver.wait_for(lambda: len(ctl.notified()) >= 6)
    kinds = [i["changeType"] for i in ctl.notified()]
    assert kinds == ["created", "created", "updated", "updated", "updated", "updated"]
    ctl.receiver.posts.clear()
    delayed = await ctl.fault("notifications", kind="delay", delay_s=300)
    assert delayed.json()["delay_s"] == 300
    await ctl.book(hour=11)
    await asyncio.sleep(0.2)
    assert ctl.notified() == []
    advanced = await ctl.client.post("/_emulator/clock/advance", json={"seconds": 301})
    assert advanced.status_code == 200
    await ctl.receiver.wait_for(lambda: len(ctl.notified()) >= 4)
    counters = (await ctl.client.get("/_emulator/counters")).json()
    assert counters["notifications_duplicated"] == 2
    assert counters["notifications_delayed"] == 4


async def test_reorder_fault_over_http(ctl: Ctl) -> None:
    await ctl.subscribe()
    assert (await ctl.fault("notifications", kind="reorder", count=1)).status_code == 201
    await ctl.book()
    await ctl.receiver.wait_for(lambda: len(ctl.notified()) >= 4)
    assert [i["changeType"] for i in ctl.notified()] == ["updated"] * 3 + ["created"]


async def test_silenced_subscription_gets_nothing_and_no_missed(ctl: Ctl) -> None:
    sub = await ctl.subscribe()
    assert (await ctl.client.post(f"/_emulator/subscriptions/{sub}/silence")).status_code == 204
    listed = (await ctl.client.get("/_emulator/subscriptions")).json()["value"]
    assert [(s["id"], s["silenced"]) for s in listed] == [(sub, True)]
    await ctl.book()
    await asyncio.sleep(0.3)
    assert ctl.receiver.posts == []
    assert (await ctl.client.delete(f"/_emulator/subscriptions/{sub}/silence")).status_code == 204
    await ctl.book(hour=12)
    await ctl.receiver.wait_for(lambda: len(ctl.notified()) >= 4)
    assert ctl.receiver.items_at("/lifecycle") == []


async def test_pause_and_resume_delivery(ctl: Ctl) -> None:
    await ctl.subscribe()
    assert (await ctl.client.post("/_emulator/delivery/pause")).status_code == 204
    await ctl.book()
    await asyncio.sleep(0.2)
    status = (await ctl.client.get("/_emulator/delivery")).json()
    assert status["paused"] is True
    assert status["queued"] == 4
    assert ctl.receiver.posts == []
    assert (await ctl.client.post("/_emulator/delivery/resume")).status_code == 204
    await ctl.receiver.wait_for(lambda: len(ctl.notified()) == 4)


async def test_forced_lifecycle_event(ctl: Ctl) -> None:
    sub = await ctl.subscribe()
    sent = await ctl.client.post(
        f"/_emulator/subscriptions/{sub}/lifecycle", json={"event": "reauthorizationRequired"}
    )
    assert sent.status_code == 204
    await ctl.receiver.wait_for(lambda: len(ctl.receiver.items_at("/lifecycle")) == 1)
    bad = await ctl.client.post(
        f"/_emulator/subscriptions/{sub}/lifecycle", json={"event": "exploded"}
    )
    assert bad.status_code == 400
    unknown = await ctl.client.delete("/_emulator/subscriptions/not-a-subscription")
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [("throttle", 429, "ApplicationThrottled"), ("unavailable", 503, "ServiceUnavailable")],
)
async def test_mailbox_faults_answer_graph_errors(
    ctl: Ctl, kind: str, status: int, code: str
) -> None:
    url = f"/v1.0/users/{ctl.room.upn}/calendarView?{VIEW}"
    added = await ctl.fault("mailboxes", mailbox=ctl.room.upn, kind=kind, count=1, retry_after_s=7)
    assert added.status_code == 201
    assert added.json()["mailbox"] == ctl.room.id
    failed = await ctl.client.get(url, headers=ctl.auth())
    assert failed.status_code == status
    assert failed.headers["Retry-After"] == "7"
    error = failed.json()["error"]
    assert error["code"] == code
    assert set(error) == set(json.loads((SAMPLES / "error-throttled.json").read_text())["error"])
    assert (await ctl.client.get(url, headers=ctl.auth())).status_code == 200
    counters = (await ctl.client.get("/_emulator/counters")).json()
    assert counters["requests_per_mailbox"][ctl.room.id] == 2
    assert counters["throttled"] == (1 if kind == "throttle" else 0)
    assert counters["max_concurrency_per_mailbox"][ctl.room.id] == 1


async def test_mailbox_timeout_fault_for_every_mailbox_until_cleared(ctl: Ctl) -> None:
    url = f"/v1.0/users/{ctl.room.id}/calendarView?{VIEW}"
    await ctl.fault("mailboxes", mailbox="*", kind="timeout", timeout_s=0.2)
    for _ in range(2):
        assert (await ctl.client.get(url, headers=ctl.auth())).status_code == 504
    cleared = await ctl.client.delete("/_emulator/faults/mailboxes")
    assert cleared.status_code == 204
    assert (await ctl.client.get(url, headers=ctl.auth())).status_code == 200


async def test_expire_delta_tokens(ctl: Ctl) -> None:
    await ctl.book()
    url: str | None = f"/v1.0/users/{ctl.room.id}/calendarView/delta?{VIEW}"
    delta_link = None
    while url is not None:
        page = (await ctl.client.get(url, headers=ctl.auth())).json()
        delta_link = page.get("@odata.deltaLink")
        next_link = page.get("@odata.nextLink")
        url = (
            None
            if next_link is None
            else urlsplit(next_link)._replace(scheme="", netloc="").geturl()
        )
    assert delta_link is not None
    path = urlsplit(delta_link)._replace(scheme="", netloc="").geturl()
    assert (await ctl.client.get(path, headers=ctl.auth())).status_code == 200
    expired = await ctl.client.post("/_emulator/delta/expire", json={"mailbox": ctl.room.upn})
    assert expired.status_code == 200
    assert expired.json()["expired"] >= 1
    gone = await ctl.client.get(path, headers=ctl.auth())
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "SyncStateNotFound"


async def test_user_style_calendar_changes(ctl: Ctl) -> None:
    await ctl.subscribe()
    event = await ctl.book()
    # The room's defaults replace the subject with the organizer's name.
    assert event["subject"] == "Adele Vance"
    assert event["organizer"]["emailAddress"]["address"] == "adele@contoso.example"
    base = f"/_emulator/mailboxes/{ctl.room.upn}/events/{event['id']}"
    moved = await ctl.client.post(
        base + "/move", json={"start": "2026-11-25T13:00:00Z", "end": "2026-11-25T14:00:00Z"}
    )
    assert moved.status_code == 200
    assert moved.json()["start"]["dateTime"].startswith("2026-11-25T13:00:00")
    kept = await ctl.client.delete(base, params={"keep": "true"})
    assert kept.status_code == 200
    assert kept.json()["isCancelled"] is True
    series = await ctl.book(
        hour=15,
        recurrence={
            "pattern": {"type": "daily", "interval": 1},
            "range": {"type": "numbered", "startDate": "2026-11-24", "numberOfOccurrences": 3},
        },
    )
    sbase = f"/_emulator/mailboxes/{ctl.room.upn}/events/{series['id']}"
    edited = await ctl.client.post(
        sbase + "/occurrences/edit",
        json={
            "originalStart": "2026-11-25T15:00:00Z",
            "start": "2026-11-25T16:00:00Z",
            "end": "2026-11-25T16:30:00Z",
        },
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["type"] == "exception"
    cancelled = await ctl.client.post(
        sbase + "/occurrences/cancel", json={"originalStart": "2026-11-26T15:00:00Z"}
    )
    assert cancelled.status_code == 204
    deleted = await ctl.client.delete(sbase)
    assert deleted.status_code == 204
    # 4 (booking) + 3 (move) + 3 (cancel) + 4 (series) + 3 + 3 (occurrences) + 1 + 2 (delete)
    await ctl.receiver.wait_for(lambda: len(ctl.notified()) >= 23)
    on_series = [i for i in ctl.notified() if i["resourceData"]["id"] == series["id"]]
    assert [i["changeType"] for i in on_series].count("deleted") == 1
    missing = await ctl.client.post(
        f"/_emulator/mailboxes/{ctl.room.upn}/events/nope/move",
        json={"start": "2026-11-25T13:00:00Z", "end": "2026-11-25T14:00:00Z"},
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "ErrorItemNotFound"


async def test_bad_control_requests_get_graph_errors(ctl: Ctl) -> None:
    bad_kind = await ctl.fault("notifications", kind="explode")
    assert bad_kind.status_code == 400
    assert "kind" in bad_kind.json()["error"]["message"]
    malformed = await ctl.client.post("/_emulator/faults/mailboxes", content=b"[1")
    assert malformed.status_code == 400
    bad_probability = await ctl.fault("notifications", kind="drop", probability=2)
    assert bad_probability.status_code == 400
    no_organizer = await ctl.client.post(
        f"/_emulator/mailboxes/{ctl.room.upn}/bookings",
        json={"start": "2026-11-24T09:00:00Z", "end": "2026-11-24T10:00:00Z"},
    )
    assert no_organizer.status_code == 400
    unknown_room = await ctl.client.post(
        "/_emulator/mailboxes/nobody@contoso.example/bookings",
        json={
            "organizer": "a@b.example",
            "start": "2026-11-24T09:00:00Z",
            "end": "2026-11-24T10:00:00Z",
        },
    )
    assert unknown_room.status_code == 404


async def test_clock_advance_moves_time_and_counters_reset(ctl: Ctl) -> None:
    before = dt.datetime.fromisoformat((await ctl.client.get("/_emulator/clock")).json()["now"])
    after = await ctl.client.post("/_emulator/clock/advance", json={"seconds": 7200})
    moved = dt.datetime.fromisoformat(after.json()["now"]) - before
    assert dt.timedelta(hours=2) <= moved < dt.timedelta(hours=2, seconds=5)
    assert (await ctl.client.post("/_emulator/clock/advance", json={})).status_code == 400
    await ctl.client.get(f"/v1.0/users/{ctl.room.id}/calendarView?{VIEW}", headers=ctl.auth())
    assert (await ctl.client.get("/_emulator/counters")).json()["requests_per_mailbox"]
    assert (await ctl.client.post("/_emulator/counters/reset")).status_code == 204
    counters = (await ctl.client.get("/_emulator/counters")).json()
    assert counters["requests_per_mailbox"] == {}
    assert counters["notifications_sent"] == 0


async def test_clock_advance_needs_a_virtual_clock() -> None:
    state = new_state(EmulatorConfig(), seed=1)
    async with serve(create_app(state)) as base_url, httpx.AsyncClient(base_url=base_url) as c:
        response = await c.post("/_emulator/clock/advance", json={"seconds": 5})
    assert response.status_code == 409
