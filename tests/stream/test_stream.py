"""The change stream over a real socket: snapshot first, one event per changed room to the
clients that follow it, resume without gap or duplicate, and a freed subscriber on disconnect."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import httpx
import pytest

from bookingcache.domain.tenancy import Room
from bookingcache.errors import StoreUnavailable
from bookingcache.read import stream as stream_module
from bookingcache.read.stream import StreamHub
from bookingcache.store.port import Store
from tests.stream.conftest import StreamTenant
from tests.support.availability import event
from tests.support.sse import Event, open_stream
from tests.support.waiting import until


async def test_snapshot_first_then_one_event_per_changed_room(
    tenant: StreamTenant, http: httpx.AsyncClient, hub: StreamHub
) -> None:
    floor1 = dict(building="HQ", floor="1")
    async with (
        open_stream(http, tenant.url, headers=tenant.reader, **floor1) as first,
        open_stream(
            http, tenant.url, ticket=await tenant.ticket(), building="HQ", floor="2"
        ) as second,
    ):
        [snapshot] = await first.wait(1)
        assert first.first_line == "retry: 2000"
        assert snapshot.event == "snapshot"
        assert [room["room"] for room in snapshot.json["rooms"]] == ["r1", "r2"]
        assert snapshot.json["rooms"][0]["status"] == "free"
        assert [room["capacity"] for room in snapshot.json["rooms"]] == [8, None]
        # The next meeting may be days ahead; the status changes no more today.
        assert snapshot.json["rooms"][1]["next"]["start"] == "2026-11-25T09:00:00Z"
        assert snapshot.json["rooms"][1]["next_change_at"] is None
        [other] = await second.wait(1)
        assert [room["room"] for room in other.json["rooms"]] == ["r3"]

        await tenant.book("r1@contoso.example", "Weekly")
        events = await first.wait(2)
        assert events[1].event == "room"
        state = events[1].json
        assert state["room"] == "r1"
        assert state["status"] == "busy"
        assert state["current"]["title"] == "Weekly"
        assert (events[1].position or 0) > (snapshot.position or 0)

        # The other floor's client hears of its own room's change, and of nothing before it.
        await tenant.book("r3@contoso.example", "Review")
        events = await second.wait(2)
        assert [e.json["room"] for e in events[1:]] == ["r3"]
        assert [e.json["room"] for e in first.events[1:]] == ["r1"]
    await until(lambda: hub.subscriber_count == 0, what="the subscribers freed")


async def test_resume_sends_each_missed_room_once_in_feed_order(
    tenant: StreamTenant, http: httpx.AsyncClient
) -> None:
    async with open_stream(http, tenant.url, headers=tenant.reader, building="HQ") as before:
        [snapshot] = await before.wait(1)
    # Changes while nobody listens: r1 twice, r2 once, a room of another building.
    await tenant.book("r1@contoso.example", "One")
    await tenant.book("r2@contoso.example", "Two")
    await tenant.book("r4@contoso.example", "Elsewhere")
    await tenant.book("r1@contoso.example", "Three")
    newest = await tenant.store.last_change_seq()

    expected = ["r2", "r1"]
    for how in ("header", "query"):
        options: dict[str, str] = {"building": "HQ"}
        headers = dict(tenant.reader)
        if how == "header":
            headers["Last-Event-ID"] = str(snapshot.id)
        else:
            options["last_event_id"] = str(snapshot.id)
        async with open_stream(http, tenant.url, headers=headers, **options) as again:
            count = len(expected)
            missed = await again.wait(count)
            assert [(e.event, e.json["room"]) for e in missed] == [("room", r) for r in expected]
            assert missed[1].json["current"]["title"] == "Three"
            ids = [(e.position, e.at_ms) for e in missed if e.id is not None]
            assert ids == sorted(set(ids))
            assert ids[-1][0] == newest
            # Live changes follow on, with higher ids; nothing else was sent.
            await tenant.book("r3@contoso.example", f"Live {how}")
            live = await again.wait(count + 1)
            assert live[count].json["room"] == "r3"
            assert (live[count].position or 0) > newest
            assert len(again.events) == count + 1
            newest = live[count].position or 0
        expected.append("r3")


async def test_an_id_the_feed_no_longer_holds_gets_a_reset(
    tenant: StreamTenant, http: httpx.AsyncClient
) -> None:
    async with open_stream(http, tenant.url, headers=tenant.reader) as before:
        [snapshot] = await before.wait(1)
    await tenant.book("r1@contoso.example", "One")
    await tenant.book("r2@contoso.example", "Two")
    # The retention passes: only the newest row is kept.
    await tenant.store.prune_changes(before=tenant.clock.now() + dt.timedelta(days=1))
    headers = {**tenant.reader, "Last-Event-ID": str(snapshot.id)}
    async with open_stream(http, tenant.url, headers=headers) as again:
        [reset] = await again.wait(1)
    assert reset.event == "reset"
    assert reset.json["reason"] == "expired"
    assert {room["room"]: room["status"] for room in reset.json["rooms"]} == {
        "r1": "busy",
        "r2": "busy",
        "r3": "free",
        "r4": "free",
    }
    assert reset.position == await tenant.store.last_change_seq()


async def test_time_passing_changes_the_status(
    tenant: StreamTenant, http: httpx.AsyncClient
) -> None:
    await tenant.book("r1@contoso.example", "Later", "09:30", "10:00")
    async with open_stream(http, tenant.url, headers=tenant.reader, room="r1") as stream:
        [snapshot] = await stream.wait(1)
        [room] = snapshot.json["rooms"]
        assert room["status"] == "free"
        assert (room["next_change_at"], room["next_status"]) == ("2026-11-23T09:30:00Z", "busy")
        assert room["next"]["title"] == "Later"
        assert room["current"] is None
        tenant.clock.advance(dt.timedelta(minutes=31))
        events = await stream.wait(2)
        started = events[1].json
        assert (started["status"], started["current"]["title"], started["next"]) == (
            "busy",
            "Later",
            None,
        )
        # A time-driven event's id: the position already sent, and the instant it holds at.
        assert events[1].position == snapshot.position
        assert events[1].at_ms == int(tenant.clock.now().timestamp() * 1000)
        # The calendar turns stale an hour after its last sync.
        tenant.clock.advance(dt.timedelta(hours=1))
        events = await stream.wait(3)
        assert (events[2].json["status"], events[2].json["stale"]) == ("unknown", True)


async def _a_meeting_starts(
    tenant: StreamTenant, http: httpx.AsyncClient, **stream_filter: str
) -> Event:
    """A client following ``stream_filter`` sees r1's 09:10-09:20 meeting start (time passing,
    no write), then goes away; the time-driven event it got, with its id."""
    await tenant.book("r1@contoso.example", "Short", "09:10", "09:20")
    async with open_stream(http, tenant.url, headers=tenant.reader, **stream_filter) as before:
        await before.wait(1)
        tenant.clock.advance(dt.timedelta(minutes=11))
        started = (await before.wait(2))[1]
    assert (started.json["room"], started.json["status"]) == ("r1", "busy")
    assert started.id is not None
    return started


async def test_resume_after_time_changed_a_room_twice_sends_its_state_now(
    tenant: StreamTenant, http: httpx.AsyncClient
) -> None:
    """The client saw a meeting start (a time-driven event), then the meeting ended while it
    was away, with no write at all: the room's state now differs from the one the client holds,
    though not from the state at the client's last change, and it is sent."""
    started = await _a_meeting_starts(tenant, http, room="r1")
    tenant.clock.advance(dt.timedelta(minutes=10))
    headers = {**tenant.reader, "Last-Event-ID": started.id or ""}
    async with open_stream(http, tenant.url, headers=headers, room="r1") as again:
        [ended] = await again.wait(1)
        assert (ended.event, ended.json["room"], ended.json["status"]) == ("room", "r1", "free")
        assert ended.position == started.position
        assert (ended.at_ms or 0) > (started.at_ms or 0)


async def test_resume_does_not_send_a_time_driven_state_the_client_has(
    tenant: StreamTenant, http: httpx.AsyncClient
) -> None:
    started = await _a_meeting_starts(tenant, http, building="HQ")
    headers = {**tenant.reader, "Last-Event-ID": started.id or ""}
    async with open_stream(http, tenant.url, headers=headers, building="HQ") as again:
        # Nothing changed since: the first event is the live one that follows.
        await tenant.book("r2@contoso.example", "Live")
        [live] = await again.wait(1)
        assert (live.json["room"], live.json["current"]["title"]) == ("r2", "Live")
        assert (live.position or 0) > (started.position or 0)
        assert len(again.events) == 1


@pytest.mark.parametrize("change", ["link", "unlink", "rename"])
async def test_resume_after_the_rooms_changed_is_a_reset(
    tenant: StreamTenant, http: httpx.AsyncClient, change: str
) -> None:
    """Rooms written while the client was away: what it holds is no longer its rooms, and no
    change of the feed says which, so it is told to start over with every room it follows."""
    async with open_stream(http, tenant.url, headers=tenant.reader, building="HQ") as before:
        [snapshot] = await before.wait(1)
    assert snapshot.id is not None
    tenant.clock.advance(dt.timedelta(minutes=1))
    if change == "link":
        room = Room(tenant.id, "r5", "r5@contoso.example", "R5", "HQ", "1")
        await tenant.store.put_room(room)
    elif change == "unlink":
        await tenant.store.delete_room(tenant.id, "r2")
    else:
        room = await tenant.store.get_room(tenant.id, "r1")
        await tenant.store.put_room(dataclasses.replace(room, name="Boardroom"))
    tenant.clock.advance(dt.timedelta(seconds=1))
    headers = {**tenant.reader, "Last-Event-ID": snapshot.id}
    async with open_stream(http, tenant.url, headers=headers, building="HQ") as again:
        [reset] = await again.wait(1)
    assert (reset.event, reset.json["reason"]) == ("reset", "rooms")
    expected = {"link": {"r1", "r2", "r3", "r5"}, "unlink": {"r1", "r3"}}
    rooms = {room["room"]: room for room in reset.json["rooms"]}
    assert set(rooms) == expected.get(change, {"r1", "r2", "r3"})
    if change == "rename":
        assert rooms["r1"]["name"] == "Boardroom"


async def test_an_event_id_must_be_one_the_stream_sends(
    tenant: StreamTenant, http: httpx.AsyncClient
) -> None:
    for wrong in ("x", "12-", "-5", "1.5", "1" * 19):
        answer = await http.get(tenant.url, headers={**tenant.reader, "Last-Event-ID": wrong})
        assert answer.status_code == 422, (wrong, answer.text)
        assert "last event id" in answer.json()["detail"]


async def test_heartbeat_comments_keep_the_connection_busy(
    tenant: StreamTenant, http: httpx.AsyncClient
) -> None:
    # The served app's heartbeat interval is short (the ``stream_settings`` fixture).
    async with open_stream(http, tenant.url, headers=tenant.reader) as stream:
        assert await stream.wait_comment() == "keep-alive"


async def test_a_change_another_process_wrote_reaches_the_stream(
    tenant: StreamTenant, http: httpx.AsyncClient, other_store: Store
) -> None:
    """Written through a store of its own, as a separate worker would: PostgreSQL announces it,
    on SQLite the hub reads the change feed while anyone listens."""
    async with open_stream(http, tenant.url, headers=tenant.reader, room="r2") as stream:
        await stream.wait(1)
        elsewhere = dataclasses.replace(tenant, store=other_store)
        await elsewhere.book("r2@contoso.example", "From the worker")
        events = await stream.wait(2)
    assert events[1].json["current"]["title"] == "From the worker"
    assert events[1].position == await other_store.last_change_seq()


async def test_a_feed_read_that_fails_part_way_loses_no_change(
    tenant: StreamTenant,
    http: httpx.AsyncClient,
    hub: StreamHub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database going away between two pages of the change feed: the pass fails, and the
    next one reads the feed again from where the last whole read ended."""
    monkeypatch.setattr(stream_module, "_FEED_PAGE", 1)
    store = hub._store
    read_page = store.changes_since
    calls = {"pages": 0}

    async def away_at_the_second_page(seq: int, *, limit: int = 1000) -> Any:
        calls["pages"] += 1
        if calls["pages"] == 2:
            raise StoreUnavailable("cannot connect to the database: connection refused")
        return await read_page(seq, limit=limit)

    async with open_stream(http, tenant.url, headers=tenant.reader, building="HQ") as client:
        await client.wait(1)
        monkeypatch.setattr(store, "changes_since", away_at_the_second_page)
        await tenant.book("r1@contoso.example", "Weekly")
        events = await client.wait(2)
        assert calls["pages"] >= 3  # the failed read, then the whole feed read again
        assert events[1].event == "room"
        assert events[1].json["room"] == "r1"
        assert events[1].json["current"]["title"] == "Weekly"


async def test_a_calendar_back_from_stale_reaches_a_client_that_comes_back(
    tenant: StreamTenant, http: httpx.AsyncClient
) -> None:
    """The client saw the room turn unknown (no sync for an hour), then a sync with the same
    events made it known again while the client was away: it is sent the room again."""
    async with open_stream(http, tenant.url, headers=tenant.reader, room="r1") as before:
        [snapshot] = await before.wait(1)
        assert snapshot.json["rooms"][0]["stale"] is False
        tenant.clock.advance(dt.timedelta(hours=1, minutes=1))
        gone = (await before.wait(2))[1]
        assert (gone.json["status"], gone.json["stale"]) == ("unknown", True)
    assert gone.id is not None
    # The events the tenant's rooms were synced with (``make_tenant``), unchanged.
    later = event("r1-later", "2026-11-25T09:00:00+00:00", "2026-11-25T10:00:00+00:00")
    await tenant.sync("r1@contoso.example", [later])
    headers = {**tenant.reader, "Last-Event-ID": gone.id}
    async with open_stream(http, tenant.url, headers=headers, room="r1") as again:
        [back] = await again.wait(1)
    assert (back.json["room"], back.json["status"], back.json["stale"]) == ("r1", "free", False)
    assert (back.position or 0) > (gone.position or 0)
