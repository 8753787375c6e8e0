from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
from fastapi import FastAPI, Query
from fastapi.routing import APIRoute

from bookingcache.api import stream
from bookingcache.api.query import single_valued
from bookingcache.errors import Throttled
from tests.support.auth import ADMIN
from tests.support.problems import assert_problem


async def test_unknown_route_is_a_problem(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/no/such/thing"), 404)
    assert body["instance"] == "/no/such/thing"
    assert "/no/such/thing" in body["detail"]


async def test_wrong_method_is_a_problem(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.put("/healthz"), 405)
    assert "PUT" in body["detail"]


async def test_validation_error_lists_every_field(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/tenants",
        json={"id": "Not Valid!", "name": "", "event_source": "carrier-pigeon"},
        headers=ADMIN,
    )
    body = assert_problem(response, 422)
    fields = {error["field"] for error in body["errors"]}
    assert {"body.id", "body.name", "body.event_source"} <= fields
    assert all(error["message"] for error in body["errors"])


async def test_malformed_json_is_a_problem(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/tenants",
        content=b"{not json",
        headers={**ADMIN, "content-type": "application/json"},
    )
    assert_problem(response, 422)


async def test_domain_errors_map_to_status(app: FastAPI, client: httpx.AsyncClient) -> None:
    async def throttled() -> None:
        raise Throttled(
            "Graph said slow down: <reply>", retry_after_s=7.2, kind="graph-throttled", status=429
        )

    async def crash() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/test/throttled", throttled)
    app.add_api_route("/test/crash", crash)
    response = await client.get("/test/throttled")
    body = assert_problem(response, 503)
    # The class of the upstream's failure, not its words.
    assert body["detail"] == "an upstream failed: graph-throttled (HTTP 429)"
    assert response.headers["retry-after"] == "7"
    response = await client.get("/test/crash", headers={"X-Request-ID": "req-42"})
    body = assert_problem(response, 500)
    assert "a bug" not in body["detail"]
    assert "req-42" in body["detail"]
    assert response.headers.get_list("x-request-id") == ["req-42"]
    # Without one of the caller's, the answer names the id the service gave the request.
    response = await client.get("/test/crash")
    body = assert_problem(response, 500)
    [given] = response.headers.get_list("x-request-id")
    assert given in body["detail"]


async def test_oversized_body_is_a_problem(client: httpx.AsyncClient) -> None:
    body = b'{"id": "x", "name": "' + b"n" * (1024 * 1024) + b'"}'
    response = await client.post(
        "/v1/tenants", content=body, headers={**ADMIN, "content-type": "application/json"}
    )
    assert_problem(response, 413)


async def test_body_longer_than_declared_is_cut_off(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"id": "x", "name": "'
        for _ in range(20):
            yield b"n" * 65536
        yield b'"}'

    response = await client.post(
        "/v1/tenants", content=chunks(), headers={**ADMIN, "content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413)


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    response = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    made = response.headers["x-request-id"]
    assert made != "bad id\twith spaces"
    assert len(made) == 16
    other = (await client.get("/nowhere")).headers["x-request-id"]
    assert other != made


async def test_a_single_valued_query_parameter_given_twice_is_refused(
    client: httpx.AsyncClient,
) -> None:
    # FastAPI would bind the last value and never look at the first.
    response = await client.get("/v1/audit?before=false&limit=5&before=7", headers=ADMIN)
    body = assert_problem(response, 422)
    assert [error["field"] for error in body["errors"]] == ["query.before"]
    assert (await client.get("/v1/audit?before=7&limit=5", headers=ADMIN)).status_code == 200


async def test_a_list_query_parameter_may_repeat(app: FastAPI, client: httpx.AsyncClient) -> None:
    async def echo(
        room: Annotated[list[str], Query()], floor: Annotated[str | None, Query()] = None
    ) -> dict[str, Any]:
        return {"room": room, "floor": floor}

    app.add_api_route("/test/echo", echo)
    response = await client.get("/test/echo?room=a&room=b&floor=2")
    assert response.json() == {"room": ["a", "b"], "floor": "2"}
    body = assert_problem(await client.get("/test/echo?room=a&floor=2&floor=3"), 422)
    assert [error["field"] for error in body["errors"]] == ["query.floor"]


async def test_the_json_api_refuses_a_query_parameter_it_does_not_take(
    client: httpx.AsyncClient,
) -> None:
    # A misspelt filter would otherwise answer as no filter at all.
    response = await client.get("/v1/audit?tennant=contoso&limit=5", headers=ADMIN)
    body = assert_problem(response, 422)
    assert [error["field"] for error in body["errors"]] == ["query.tennant"]
    assert "before, limit, tenant" in body["detail"]
    nameless = assert_problem(await client.get("/v1/tenants?=false", headers=ADMIN), 422)
    assert [error["field"] for error in nameless["errors"]] == ["query."]
    # The pages are not the JSON API: the live page takes ?display=kiosk and whatever else.
    assert (await client.get("/?display=kiosk&utm_source=lobby")).status_code == 200


def test_the_streams_room_filter_is_the_one_that_repeats() -> None:
    (route,) = [
        r for r in stream.router.routes if isinstance(r, APIRoute) and r.path.endswith("/stream")
    ]
    once = single_valued(route)
    assert "room" not in once
    assert {"building", "floor", "last_event_id"} <= once
