"""Whatever a client sends, the emulator answers with Graph's error body, never a 500."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from graph_emulator.app import create_app
from graph_emulator.auth import issue_token
from graph_emulator.model import WRITABLE

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
time_values = st.fixed_dictionaries(
    {
        "dateTime": st.sampled_from(["2026-03-17T09:00:00", "2026-03-17T25:00", "", "x"]),
        "timeZone": st.sampled_from(["UTC", "W. Europe Standard Time", "Nowhere", ""]),
    }
)
event_bodies = st.dictionaries(
    st.sampled_from(sorted(WRITABLE)), json_values | time_values, max_size=6
)
printable = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20)
FAST = settings(max_examples=60, deadline=None)


class Caller:
    """Sends requests to one in-process emulator as the tenant's full app."""

    def __init__(self, tenant: Any) -> None:
        self.app = create_app(tenant.state)
        self.token = issue_token(tenant.state, tenant.apps["full"])[0]

    def __call__(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="https://g.test") as client:
                headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
                return await client.request(method, url, headers=headers, **kwargs)

        return asyncio.run(call())


def test_event_bodies_never_cause_a_500(tenant: Any) -> None:
    call = Caller(tenant)

    @FAST
    @given(body=event_bodies)
    def check(body: dict[str, Any]) -> None:
        response = call("POST", f"/v1.0/users/{tenant.room.id}/events", json=body)
        assert response.status_code in (201, 400), (body, response.text)
        if response.status_code == 400:
            error = response.json()["error"]
            assert error["code"]
            assert error["message"]

    check()


def test_calendar_view_parameters_never_cause_a_500(tenant: Any) -> None:
    call = Caller(tenant)

    @FAST
    @given(start=printable, end=printable, top=printable, select=printable, prefer=printable)
    def check(start: str, end: str, top: str, select: str, prefer: str) -> None:
        response = call(
            "GET",
            f"/v1.0/users/{tenant.room.id}/calendarView",
            params={"startDateTime": start, "endDateTime": end, "$top": top, "$select": select},
            headers={"Prefer": prefer},
        )
        assert response.status_code in (200, 400), response.text

    check()


def test_schedule_and_batch_bodies_never_cause_a_500(tenant: Any) -> None:
    call = Caller(tenant)

    schedules = st.fixed_dictionaries(
        {},
        optional={
            "schedules": st.lists(st.sampled_from([tenant.room.upn, "x"]), max_size=3)
            | json_values,
            "startTime": time_values | json_values,
            "endTime": time_values | json_values,
            "availabilityViewInterval": st.integers(-5, 2000) | json_values,
        },
    )
    member = st.fixed_dictionaries(
        {},
        optional={
            "id": st.sampled_from(["1", "2", "3"]) | json_values,
            "method": st.sampled_from(["GET", "POST", "PATCH", "BREW"]) | json_values,
            "url": st.sampled_from(["/users/x", f"users/{tenant.room.id}/events", "%%", ""])
            | json_values,
            "dependsOn": st.lists(st.sampled_from(["1", "2", "3"]), max_size=2) | json_values,
            "body": json_values,
            "headers": st.just({"Content-Type": "application/json"}) | json_values,
        },
    )
    batches = st.fixed_dictionaries({"requests": st.lists(member, max_size=4) | json_values})

    @FAST
    @given(body=json_values | schedules, batch=json_values | batches)
    def check(body: Any, batch: Any) -> None:
        url = f"/v1.0/users/{tenant.room.id}/calendar/getSchedule"
        response = call("POST", url, json=body)
        assert response.status_code in (200, 400), response.text
        response = call("POST", "/v1.0/$batch", json=batch)
        assert response.status_code in (200, 400), response.text
        if response.status_code == 200:
            assert all(r["status"] != 500 for r in response.json()["responses"]), response.text

    check()
