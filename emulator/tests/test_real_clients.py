"""Real clients written outside this project prove the wire format: MSAL Python gets and caches
tokens over TLS, and the official msgraph-sdk reads calendarView across pages and getSchedule."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("no_ca_bundle_env"),
    # The SDK's generated code deprecates its own classes as it imports them.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:msgraph"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:kiota_abstractions"),
]


def test_msal_acquires_then_serves_from_cache(demo_emulator: Any, msal_factory: Any) -> None:
    app = msal_factory(demo_emulator, demo_emulator.apps["full"])
    first = app.acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"])
    assert "access_token" in first, first
    assert first["token_type"] == "Bearer"
    assert first.get("token_source") == "identity_provider"
    second = app.acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"])
    assert second["access_token"] == first["access_token"]
    assert second.get("token_source") == "cache"


def test_msal_reports_a_wrong_secret(demo_emulator: Any, msal_factory: Any) -> None:
    real = demo_emulator.apps["full"]
    wrong = type(real)(real.client_id, "not-the-secret", real.display_name, set(real.roles))
    result = msal_factory(demo_emulator, wrong).acquire_token_for_client(
        scopes=["https://graph.microsoft.com/.default"]
    )
    assert result["error"] == "invalid_client"
    assert "AADSTS7000215" in result["error_description"]


async def test_sdk_reads_calendar_view_across_pages(demo_emulator: Any, sdk_factory: Any) -> None:
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.users.item.calendar.calendar_view import (
        calendar_view_request_builder as cv,
    )

    client = sdk_factory(demo_emulator, demo_emulator.apps["full"])
    state = demo_emulator.state
    room = max(
        state.directory.rooms(),
        key=lambda r: len(state.calendars.items(r)),
    )
    monday = state.clock.now().date() - dt.timedelta(days=state.clock.now().weekday())
    start = f"{monday.isoformat()}T00:00:00Z"
    end = f"{(monday + dt.timedelta(days=7)).isoformat()}T00:00:00Z"
    config = RequestConfiguration(
        query_parameters=cv.CalendarViewRequestBuilder.CalendarViewRequestBuilderGetQueryParameters(
            start_date_time=start,
            end_date_time=end,
            select=["id", "subject", "start", "end", "type", "seriesMasterId", "showAs"],
        )
    )
    builder = client.users.by_user_id(room.upn).calendar.calendar_view
    page = await builder.get(request_configuration=config)
    seen = list(page.value)
    pages = 1
    while page.odata_next_link:
        page = await builder.with_url(page.odata_next_link).get()
        seen.extend(page.value)
        pages += 1
    expected = state.calendars.instances(
        room,
        dt.datetime.fromisoformat(start),
        dt.datetime.fromisoformat(end),
    )
    assert len(expected) > 10, "the demo's busiest room fills more than one default page"
    assert pages == -(-len(expected) // 10)
    assert [e.id for e in seen] == [i.id for i in expected]
    assert {e.type.value for e in seen} >= {"singleInstance"}
    first = seen[0]
    assert first.start.time_zone == "UTC"
    assert first.start.date_time.endswith(".0000000")


async def test_sdk_get_schedule(demo_emulator: Any, sdk_factory: Any) -> None:
    from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
    from msgraph.generated.users.item.calendar.get_schedule.get_schedule_post_request_body import (
        GetSchedulePostRequestBody,
    )

    client = sdk_factory(demo_emulator, demo_emulator.apps["full"])
    state = demo_emulator.state
    rooms = sorted(state.directory.rooms(), key=lambda r: r.upn)[:3]
    monday = state.clock.now().date() - dt.timedelta(days=state.clock.now().weekday())
    body = GetSchedulePostRequestBody(
        schedules=[r.upn for r in rooms],
        start_time=DateTimeTimeZone(date_time=f"{monday}T08:00:00", time_zone="UTC"),
        end_time=DateTimeTimeZone(date_time=f"{monday}T18:00:00", time_zone="UTC"),
        availability_view_interval=30,
    )
    result = await client.users.by_user_id(rooms[0].upn).calendar.get_schedule.post(body)
    assert [s.schedule_id for s in result.value] == [r.upn for r in rooms]
    for info in result.value:
        assert len(info.availability_view) == 20
        assert set(info.availability_view) <= set("01234")
        assert info.working_hours.time_zone.name
        busy_slots = sum(1 for digit in info.availability_view if digit != "0")
        assert (busy_slots == 0) == (len(info.schedule_items) == 0)
