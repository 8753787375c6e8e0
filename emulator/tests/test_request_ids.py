"""Every Graph answer carries ``request-id`` (a new GUID per request) and ``client-request-id``
(the caller's own id echoed, else the request-id); an error body's ``innerError`` repeats both,
as in Microsoft Graph's responses and error samples."""

from __future__ import annotations

import uuid
from typing import Any

WINDOW = {"startDateTime": "2026-03-16T00:00:00Z", "endDateTime": "2026-03-23T00:00:00Z"}


def ids_of(response: Any) -> tuple[str, str]:
    return response.headers["request-id"], response.headers["client-request-id"]


async def test_successful_answers_carry_both_ids(tenant: Any, graph: Any) -> None:
    answers = [
        await graph.http.get(f"/v1.0/users/{tenant.room.upn}/calendarView", params=WINDOW),
        await graph.http.get(f"/v1.0/users/{tenant.room.upn}/calendar"),
        await graph.http.get("/v1.0/subscriptions"),
        await graph.http.post(
            f"/v1.0/users/{tenant.room.upn}/calendar/getSchedule",
            json={
                "schedules": [tenant.room.upn],
                "startTime": {"dateTime": "2026-03-17T08:00:00", "timeZone": "UTC"},
                "endTime": {"dateTime": "2026-03-17T12:00:00", "timeZone": "UTC"},
            },
        ),
    ]
    seen = set()
    for response in answers:
        assert response.status_code == 200, response.text
        request_id, client_request_id = ids_of(response)
        assert uuid.UUID(request_id)
        assert client_request_id == request_id
        seen.add(request_id)
    assert len(seen) == len(answers)


async def test_the_callers_client_request_id_is_echoed(tenant: Any, graph: Any) -> None:
    mine = str(uuid.uuid4())
    response = await graph.http.get(
        f"/v1.0/users/{tenant.room.upn}/calendarView",
        params=WINDOW,
        headers={"client-request-id": mine},
    )
    assert response.status_code == 200
    request_id, client_request_id = ids_of(response)
    assert client_request_id == mine
    assert request_id != mine


async def test_error_bodies_repeat_the_header_ids(tenant: Any, graph: Any) -> None:
    mine = str(uuid.uuid4())
    failures = [
        # Handled in the route (unknown user), in the router (unknown segment), in the
        # subscription API, and before authentication.
        await graph.http.get(
            "/v1.0/users/nobody@contoso.example/calendarView",
            params=WINDOW,
            headers={"client-request-id": mine},
        ),
        await graph.http.get(
            f"/v1.0/users/{tenant.room.upn}/mailFolders", headers={"client-request-id": mine}
        ),
        await graph.http.get("/v1.0/subscriptions/not-there", headers={"client-request-id": mine}),
        await graph.http.get(
            f"/v1.0/users/{tenant.room.upn}/calendar",
            headers={"client-request-id": mine, "Authorization": ""},
        ),
    ]
    for response in failures:
        assert response.status_code >= 400
        request_id, client_request_id = ids_of(response)
        assert client_request_id == mine
        inner = response.json()["error"]["innerError"]
        assert inner["request-id"] == request_id
        assert inner["client-request-id"] == mine


async def test_batch_members_get_their_own_ids(tenant: Any, graph: Any) -> None:
    view = f"/users/{tenant.room.upn}/calendarView?startDateTime=2026-03-16T00:00:00Z"
    view += "&endDateTime=2026-03-23T00:00:00Z"
    response = await graph.http.post(
        "/v1.0/$batch",
        json={
            "requests": [
                {"id": "1", "method": "GET", "url": view},
                {
                    "id": "2",
                    "method": "GET",
                    "url": view,
                    "headers": {"client-request-id": "member-two"},
                },
            ]
        },
    )
    assert response.status_code == 200
    envelope_id = response.headers["request-id"]
    members = {
        r["id"]: {k.lower(): v for k, v in r["headers"].items()}
        for r in response.json()["responses"]
    }
    assert members["2"]["client-request-id"] == "member-two"
    member_ids = {members["1"]["request-id"], members["2"]["request-id"]}
    assert len(member_ids) == 2
    assert envelope_id not in member_ids
