from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bookingcache_connector.app import create_app
from bookingcache_connector.bootstrap import Connector
from bookingcache_connector.events import BASIC_FIELDS, MalformedEvent, TitlePolicy, basic_event
from bookingcache_connector.signing import Signer

from .conftest import WEBHOOK_SECRET
from .fakes import FakeClock, FakeGraph, sample

PAGE = sample("calendarview-page1.json")


def test_sample_page_becomes_basic_events() -> None:
    events = [basic_event(e).to_json() for e in PAGE["value"]]
    assert [tuple(e) for e in events] == [BASIC_FIELDS] * 5
    assert events[0] == {
        "id": PAGE["value"][0]["id"],
        "start": "2026-11-24T08:00:00Z",
        "end": "2026-11-24T09:00:00Z",
        "isAllDay": False,
        "showAs": "busy",
        "isCancelled": False,
        "subject": "Kari Nordmann",
        "sensitivity": "normal",
        "type": "singleInstance",
        "seriesMasterId": None,
    }
    assert events[1]["seriesMasterId"] == PAGE["value"][1]["seriesMasterId"]
    # all-day: Graph's midnight-to-midnight of the local dates, passed on unchanged
    assert (events[2]["isAllDay"], events[2]["start"], events[2]["end"]) == (
        True,
        "2026-11-25T00:00:00Z",
        "2026-11-26T00:00:00Z",
    )
    assert events[3]["isCancelled"] is True
    assert events[4]["sensitivity"] == "private"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
SECRET_MARK = "LEAK-"
secret_text = st.text(min_size=1, max_size=12).map(lambda s: SECRET_MARK + s)
person = st.builds(
    lambda n, a: {"emailAddress": {"name": n, "address": a}}, secret_text, secret_text
)
extra_fields: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {
        "body": st.builds(lambda c: {"contentType": "html", "content": c}, secret_text),
        "bodyPreview": secret_text,
        "attendees": st.lists(st.builds(lambda p: {**p, "type": "required"}, person), max_size=3),
        "organizer": person,
        "location": st.builds(lambda n: {"displayName": n}, secret_text),
        "locations": st.lists(st.builds(lambda n: {"displayName": n}, secret_text), max_size=2),
        "attachments": st.lists(
            st.builds(lambda n: {"name": n, "contentBytes": n}, secret_text), max_size=2
        ),
        "extensions": st.lists(st.builds(lambda n: {"extensionName": n}, secret_text), max_size=2),
        "onlineMeeting": st.builds(lambda u: {"joinUrl": u}, secret_text),
        "webLink": secret_text,
        "iCalUId": secret_text,
        "categories": st.lists(secret_text, max_size=2),
    }
) | st.just({})
random_keys = st.dictionaries(
    st.text(min_size=1, max_size=10).filter(lambda k: k not in BASIC_FIELDS),
    json_values,
    max_size=5,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(PAGE["value"]), extras=extra_fields, noise=random_keys)
def test_only_allowlisted_fields_ever_leave(
    base: dict[str, Any], extras: dict[str, Any], noise: dict[str, Any]
) -> None:
    event = {**noise, **extras, **copy.deepcopy(base)}
    out = basic_event(event).to_json()
    assert set(out) == set(BASIC_FIELDS)
    assert SECRET_MARK not in json.dumps(out)
    for key in (
        "id",
        "isAllDay",
        "showAs",
        "isCancelled",
        "subject",
        "sensitivity",
        "type",
        "seriesMasterId",
    ):
        assert out[key] == base[key]


@settings(max_examples=150, deadline=None)
@given(
    base=st.sampled_from(PAGE["value"]),
    subject=secret_text,
    sensitivity=st.sampled_from(["normal", "personal", "private", "confidential", "odd", None]),
    policy=st.sampled_from(list(TitlePolicy)),
)
def test_a_withheld_subject_never_leaves(
    base: dict[str, Any], subject: str, sensitivity: str | None, policy: TitlePolicy
) -> None:
    event = {**copy.deepcopy(base), "subject": subject, "sensitivity": sensitivity}
    out = basic_event(event, policy).to_json()
    private = sensitivity in ("private", "confidential")
    withheld = policy is TitlePolicy.WITHHOLD or (
        policy is TitlePolicy.WITHHOLD_PRIVATE and private
    )
    if withheld:
        assert out["subject"] is None
        assert SECRET_MARK not in json.dumps(out)
    else:
        assert out["subject"] == subject
    # Everything else is the same whatever the policy.
    assert {**out, "subject": None} == {**basic_event(event).to_json(), "subject": None}


def signed_get(signer: Signer, path: str) -> dict[str, str]:
    return signer.headers("GET", path, b"")


async def get_signed(connector: Connector, clock: FakeClock, path: str) -> httpx.Response:
    """``GET path`` from the connector's app, signed as the service signs it."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(connector)), base_url="http://c"
    ) as http:
        return await http.get(path, headers=signed_get(Signer(WEBHOOK_SECRET, clock), path))


async def test_events_endpoint_follows_every_next_link(
    make_connector: Any, graph: FakeGraph, clock: FakeClock
) -> None:
    mailbox = "room-a1@contoso.example"
    # 2,500 events (every one carrying fields that must not leave) -> pages of 1,000 + nextLinks
    template = {
        **PAGE["value"][0],
        "body": {"content": "secret agenda"},
        "attendees": [{"emailAddress": {"address": "ceo@contoso.example"}}],
    }
    graph.events[mailbox] = [
        {
            **template,
            "id": f"ev-{i:05d}",
            "start": {"dateTime": f"2026-11-24T{8 + i % 9:02d}:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": f"2026-11-24T{8 + i % 9:02d}:30:00.0000000", "timeZone": "UTC"},
        }
        for i in range(2500)
    ]
    connector = make_connector()
    path = f"/v1/calendars/{mailbox}/events?start=2026-11-24T00:00:00Z&end=2026-11-25T00:00:00Z"
    response = await get_signed(connector, clock, path)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["mailbox"], body["start"], body["end"]) == (
        mailbox,
        "2026-11-24T00:00:00Z",
        "2026-11-25T00:00:00Z",
    )
    assert [e["id"] for e in body["events"]] == [f"ev-{i:05d}" for i in range(2500)]
    assert "secret agenda" not in response.text
    assert "ceo@" not in response.text
    views = [p for m, p in graph.requests if p.endswith("calendarView")]
    assert len(views) == 3


@pytest.mark.parametrize(
    ("policy", "subjects"),
    [
        (TitlePolicy.SEND, ["Kari Nordmann", "Weekly planning", "Ola Hansen"]),
        (TitlePolicy.WITHHOLD_PRIVATE, ["Kari Nordmann", "Weekly planning", None]),
        (TitlePolicy.WITHHOLD, [None, None, None]),
    ],
)
async def test_the_connector_title_policy_holds_whatever_the_service_asks(
    make_connector: Any,
    graph: FakeGraph,
    clock: FakeClock,
    policy: TitlePolicy,
    subjects: list[str | None],
) -> None:
    """The third event is private; what the policy withholds is not in the answer at all."""
    mailbox = "room-a1@contoso.example"
    graph.events[mailbox] = [PAGE["value"][0], PAGE["value"][1], PAGE["value"][4]]
    assert PAGE["value"][4]["sensitivity"] == "private"
    connector = make_connector(title_policy=policy)
    path = f"/v1/calendars/{mailbox}/events?start=2026-11-24T00:00:00Z&end=2026-12-08T00:00:00Z"
    response = await get_signed(connector, clock, path)
    assert response.status_code == 200, response.text
    assert [e["subject"] for e in response.json()["events"]] == subjects
    for subject in {"Kari Nordmann", "Weekly planning", "Ola Hansen"} - set(subjects):
        assert subject not in response.text


async def test_events_endpoint_reports_denied_mailbox_and_bad_window(
    make_connector: Any, graph: FakeGraph, clock: FakeClock
) -> None:
    graph.denied.add("room-x@contoso.example")
    app = create_app(make_connector())
    signer = Signer(WEBHOOK_SECRET, clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://c"
    ) as http:
        window = "start=2026-11-24T00:00:00Z&end=2026-11-25T00:00:00Z"
        denied = f"/v1/calendars/room-x@contoso.example/events?{window}"
        response = await http.get(denied, headers=signed_get(signer, denied))
        assert response.status_code == 403
        assert "ErrorAccessDenied" in response.text
        bad = (
            "/v1/calendars/room-a1@contoso.example/events?start=yesterday&end=2026-11-25T00:00:00Z"
        )
        assert (await http.get(bad, headers=signed_get(signer, bad))).status_code == 400


@pytest.mark.parametrize("zone", ["W. Europe Standard Time", "Europe/Oslo"])
def test_times_not_in_utc_are_refused(zone: str) -> None:
    event = {**PAGE["value"][0], "start": {"dateTime": "2026-11-24T08:00:00", "timeZone": zone}}
    with pytest.raises(MalformedEvent, match="expected UTC"):
        basic_event(event)


def test_parse_handles_graph_seven_digit_fractions() -> None:
    from bookingcache_connector.clock import parse_instant

    assert parse_instant("2026-11-24T08:00:00.1234567") == datetime(
        2026, 11, 24, 8, 0, 0, 123456, tzinfo=UTC
    )


async def test_a_window_before_the_year_1000_is_spelt_with_four_digit_years(
    make_connector: Any, clock: FakeClock
) -> None:
    """Graph and the contract spell instants ``YYYY-MM-DDTHH:MM:SSZ``: a year below 1000 keeps its
    leading zeros, on the way to Graph as in the answer."""
    connector = make_connector()
    window = "start=0832-08-06T10:47:05Z&end=0832-08-07T10:47:05Z"
    path = f"/v1/calendars/room-a1@contoso.example/events?{window}"
    response = await get_signed(connector, clock, path)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["start"], body["end"]) == ("0832-08-06T10:47:05Z", "0832-08-07T10:47:05Z")


async def test_an_instant_that_is_no_utc_date_is_refused_as_bad_input(
    make_connector: Any, graph: FakeGraph, clock: FakeClock
) -> None:
    """1 January of year 1 at 01:00 nine hours east of UTC is in year 0 in UTC, a date Python
    cannot hold: a 400, not a failure of the connector."""
    connector = make_connector()
    window = "start=0001-01-01T01:00:01%2B09:01&end=0001-01-02T00:00:00Z"
    path = f"/v1/calendars/room-a1@contoso.example/events?{window}"
    response = await get_signed(connector, clock, path)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert graph.requests == []
