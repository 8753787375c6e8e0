"""Events CRUD over Graph, room calendar processing and the notification bursts of §9."""

from __future__ import annotations

from typing import Any

import pytest

from graph_emulator.config import EmulatorConfig


def body(tenant: Any, **extra: Any) -> dict[str, Any]:
    return {
        "subject": "Budget review",
        "body": {"contentType": "html", "content": "<p>numbers</p>"},
        "start": tenant.when("2026-03-17T09:00:00"),
        "end": tenant.when("2026-03-17T10:00:00"),
    } | extra


async def test_create_read_update_delete(tenant: Any, graph: Any, recording_sink: Any) -> None:
    base = f"/v1.0/users/{tenant.person.upn}/calendar/events"
    created = await graph.http.post(base, json=body(tenant))
    assert created.status_code == 201, created.text
    event = created.json()
    assert event["type"] == "singleInstance"
    assert event["start"] == {"dateTime": "2026-03-17T08:00:00.0000000", "timeZone": "UTC"}
    assert event["originalStartTimeZone"] == "W. Europe Standard Time"
    assert event["@odata.etag"] == f'W/"{event["changeKey"]}"'
    assert event["isOrganizer"] is True
    assert created.headers["Location"].endswith(event["id"])
    # A person's mailbox: one notification per change.
    assert recording_sink.changes == [(tenant.person.id, event["id"], "created")]

    read = await graph.http.get(f"/v1.0/users/{tenant.person.id}/events/{event['id']}")
    assert read.json()["subject"] == "Budget review"

    patched = await graph.http.patch(
        f"{base}/{event['id']}", json={"subject": "Budget review (moved)", "showAs": "tentative"}
    )
    assert patched.status_code == 200
    assert patched.json()["subject"] == "Budget review (moved)"
    assert patched.json()["changeKey"] != event["changeKey"]

    listed = await graph.http.get(f"/v1.0/users/{tenant.person.id}/events")
    assert [e["id"] for e in listed.json()["value"]] == [event["id"]]

    deleted = await graph.http.delete(f"{base}/{event['id']}")
    assert deleted.status_code == 204
    again = await graph.http.delete(f"{base}/{event['id']}")
    assert again.status_code == 404
    assert [c[2] for c in recording_sink.changes] == ["created", "updated", "deleted"]


async def test_room_booking_bursts_like_exchange(tenant: Any, recording_sink: Any) -> None:
    calendars = tenant.state.calendars
    event = tenant.book(tenant.room, "2026-03-17T09:00:00", "2026-03-17T10:00:00")
    assert [c[2] for c in recording_sink.changes] == ["created", "updated", "updated", "updated"]
    recording_sink.changes.clear()
    calendars.update_event(tenant.room.id, event["id"], {"end": tenant.when("2026-03-17T10:30:00")})
    assert [c[2] for c in recording_sink.changes] == ["updated"] * 3
    recording_sink.changes.clear()
    calendars.delete_event(tenant.room.id, event["id"])
    assert [c[2] for c in recording_sink.changes] == ["deleted", "updated", "updated"]
    assert {c[1] for c in recording_sink.changes} == {event["id"]}


async def test_room_calendar_processing(tenant: Any) -> None:
    private = {"sensitivity": "private", "subject": "Reorg talk"}
    accepted = tenant.book(tenant.room, "2026-03-17T09:00:00", "2026-03-17T10:00:00", **private)
    # DeleteSubject + AddOrganizerToSubject, RemovePrivateProperty, DeleteComments, AutoAccept.
    assert accepted["subject"] == "Kari Nordmann"
    assert accepted["sensitivity"] == "normal"
    assert accepted["body"]["content"] == ""
    assert accepted["showAs"] == "busy"
    assert accepted["organizer"]["emailAddress"]["address"] == tenant.person.upn
    assert accepted["isOrganizer"] is False
    room_attendee = accepted["attendees"][-1]
    assert room_attendee["type"] == "resource"
    assert room_attendee["status"]["response"] == "accepted"
    # AutoUpdate room keeping subjects and privacy: tentative only.
    tentative = tenant.book(
        tenant.tentative_room, "2026-03-17T09:00:00", "2026-03-17T10:00:00", **private
    )
    assert tentative["subject"] == "Reorg talk"
    assert tentative["sensitivity"] == "private"
    assert tentative["showAs"] == "tentative"
    assert tentative["attendees"][-1]["status"]["response"] == "tentativelyAccepted"


async def test_add_organizer_only_prefixes_the_subject(tenant: Any) -> None:
    tenant.room.delete_subject = False
    event = tenant.book(tenant.room, "2026-03-17T09:00:00", "2026-03-17T10:00:00")
    assert event["subject"] == "Kari Nordmann Planning"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"{not json", "BadRequest"),
        (b"[1, 2]", "BadRequest"),
        (b"", "BadRequest"),
    ],
)
async def test_malformed_json_is_a_graph_400(
    tenant: Any, graph: Any, payload: bytes, code: str
) -> None:
    response = await graph.http.post(
        f"/v1.0/users/{tenant.person.id}/events",
        content=payload,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"colour": "red"}, "RequestBodyRead"),
        ({"showAs": "maybe"}, "RequestBodyRead"),
        ({"start": {"dateTime": "someday", "timeZone": "UTC"}}, "UnableToDeserializePostBody"),
        ({"start": {"dateTime": "2026-03-17T09:00:00", "timeZone": "Mars/Olympus"}},
         "TimeZoneNotSupportedException"),
        ({"end": {"dateTime": "2026-03-17T07:00:00", "timeZone": "UTC"}},
         "ErrorCalendarEndDateIsEarlierThanStartDate"),
        ({"isAllDay": True}, "ErrorInvalidRequest"),
        ({"recurrence": {"pattern": {"type": "weekly"}, "range": {"type": "noEnd"}}},
         "ErrorInvalidRecurrence"),
    ],
)  # fmt: skip
async def test_invalid_events_get_graph_errors(
    tenant: Any, graph: Any, change: dict[str, Any], code: str
) -> None:
    response = await graph.http.post(
        f"/v1.0/users/{tenant.person.id}/events", json=body(tenant) | change
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code
    assert tenant.state.calendars.items(tenant.person) == []


async def test_missing_start_and_unknown_event(tenant: Any, graph: Any) -> None:
    response = await graph.http.post(
        f"/v1.0/users/{tenant.person.id}/events", json={"subject": "no time"}
    )
    assert response.status_code == 400
    missing = await graph.http.get(f"/v1.0/users/{tenant.person.id}/events/AAMkAGnope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "ErrorItemNotFound"


async def test_unexpected_failures_are_graph_500s(tenant: Any, graph: Any) -> None:
    async def broken(app_id: str, mailbox_id: str) -> None:
        raise RuntimeError("disk on fire")

    tenant.state.mailbox_request_hooks.append(broken)
    response = await graph.http.get(f"/v1.0/users/{tenant.person.id}/events")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "generalException"
    tenant.state.mailbox_request_hooks.remove(broken)
    assert (await graph.http.get(f"/v1.0/users/{tenant.person.id}/events")).status_code == 200


async def test_burst_sizes_are_configurable(tenant_factory: Any) -> None:
    tenant = tenant_factory(EmulatorConfig(burst_create_updates=1))
    seen: list[str] = []

    class Sink:
        def event_changed(self, *, mailbox_id: str, event_id: str, change_type: str) -> None:
            seen.append(change_type)

    tenant.state.notifications = Sink()
    tenant.book(tenant.room, "2026-03-17T09:00:00", "2026-03-17T10:00:00")
    assert seen == ["created", "updated"]


async def test_if_match_guards_updates_and_deletes(tenant: Any, graph: Any) -> None:
    event = tenant.book(tenant.person, "2026-03-17T09:00:00", "2026-03-17T10:00:00")
    path = f"/v1.0/users/{tenant.person.id}/events/{event['id']}"
    current = event["@odata.etag"]
    changed = await graph.http.patch(path, json={"subject": "a"}, headers={"If-Match": current})
    assert changed.status_code == 200
    stale = await graph.http.patch(path, json={"subject": "b"}, headers={"If-Match": current})
    assert stale.status_code == 412
    assert stale.json()["error"]["code"] == "ErrorIrresolvableConflict"
    refused = await graph.http.delete(path, headers={"If-Match": current})
    assert refused.status_code == 412
    deleted = await graph.http.delete(path, headers={"If-Match": changed.json()["@odata.etag"]})
    assert deleted.status_code == 204
