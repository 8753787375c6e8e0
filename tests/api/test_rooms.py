from __future__ import annotations

from typing import Any

import httpx

from tests.support.auth import ADMIN
from tests.support.problems import assert_problem

SQUARE = {"type": "Polygon", "coordinates": [[[0, 0], [0, 1], [1, 1], [1, 0], [0, 0]]]}


def room(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "mailbox": "Room.101@Contoso.com",
        "name": "Ada Lovelace",
        "building": "HQ",
        "floor": "1",
        "geometry": SQUARE,
        "capacity": 8,
    }
    body.update(overrides)
    return body


async def test_put_creates_then_replaces(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    url = f"/v1/tenants/{tenant['id']}/rooms/r-101"
    response = await client.put(url, json=room(), headers=ADMIN)
    assert response.status_code == 201, response.text
    assert response.headers["location"] == url
    created = response.json()
    assert created == {
        "room_id": "r-101",
        "mailbox": "room.101@contoso.com",
        "name": "Ada Lovelace",
        "building": "HQ",
        "floor": "1",
        "time_zone": None,
        "geometry": SQUARE,
        "capacity": 8,
    }
    response = await client.put(
        url,
        json=room(name="Grace Hopper", time_zone="Pacific Standard Time", capacity=None),
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Grace Hopper"
    assert response.json()["time_zone"] == "America/Los_Angeles"
    assert response.json()["capacity"] is None
    assert (await client.get(url, headers=ADMIN)).json() == response.json()


async def test_list_filters_by_building_and_floor(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    base = f"/v1/tenants/{tenant['id']}/rooms"
    placements = {"a": ("HQ", "1"), "b": ("HQ", "2"), "c": ("Annex", "1")}
    for room_id, (building, floor) in placements.items():
        body = room(mailbox=f"{room_id}@contoso.com", building=building, floor=floor)
        assert (await client.put(f"{base}/{room_id}", json=body, headers=ADMIN)).status_code == 201

    async def ids(**params: str) -> set[str]:
        response = await client.get(base, params=params, headers=ADMIN)
        assert response.status_code == 200, response.text
        return {r["room_id"] for r in response.json()["rooms"]}

    assert await ids() == {"a", "b", "c"}
    assert await ids(building="HQ") == {"a", "b"}
    assert await ids(building="HQ", floor="1") == {"a"}
    assert await ids(floor="1") == {"a", "c"}
    assert await ids(building="Nowhere") == set()
    response = await client.get(base, params={"building": "H\x00Q"}, headers=ADMIN)
    assert_problem(response, 422)


async def test_delete_room(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    url = f"/v1/tenants/{tenant['id']}/rooms/r1"
    await client.put(url, json=room(), headers=ADMIN)
    assert (await client.delete(url, headers=ADMIN)).status_code == 204
    assert_problem(await client.get(url, headers=ADMIN), 404)
    assert_problem(await client.delete(url, headers=ADMIN), 404)


async def test_rooms_of_unknown_tenant(client: httpx.AsyncClient) -> None:
    assert_problem(await client.put("/v1/tenants/nobody/rooms/r1", json=room(), headers=ADMIN), 404)
    assert_problem(await client.get("/v1/tenants/nobody/rooms", headers=ADMIN), 404)
    assert_problem(await client.get("/v1/tenants/nobody/rooms/r1", headers=ADMIN), 404)


# Each case is refused with a 422 naming the field, and nothing is stored. One app serves all
# cases: these are checks of the HTTP edge, and an app per case would cost more than the check.
BAD_ROOMS: list[tuple[dict[str, Any], str]] = [
    ({"mailbox": "not-an-address"}, "body.mailbox"),
    ({"mailbox": "two@@contoso.com"}, "body.mailbox"),
    ({"mailbox": "room@localhost"}, "body.mailbox"),
    ({"name": ""}, "body.name"),
    ({"name": "Ada\x00"}, "body.name"),
    ({"building": "H\x00Q"}, "body.building"),
    ({"floor": "1\x07"}, "body.floor"),
    ({"time_zone": "Atlantis/Capital"}, "body.time_zone"),
    ({"geometry": {"type": "Circle", "coordinates": [0, 0]}}, "body.geometry"),
    ({"geometry": {"type": "Point", "coordinates": [0]}}, "body.geometry"),
    ({"geometry": {"type": "Point", "coordinates": ["a", "b"]}}, "body.geometry"),
    ({"geometry": {"type": "Point"}}, "body.geometry"),
    (
        {"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]}},
        "body.geometry",
    ),
    (
        {"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [0, 1], [1, 1], [1, 0]]]}},
        "body.geometry",
    ),
    ({"geometry": {"type": "LineString", "coordinates": [[0, 0]]}}, "body.geometry"),
    ({"geometry": {"type": "Point", "coordinates": [0, 0], "label": "\x00"}}, "body.geometry"),
    (
        {"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [0, 1], [1, "1"], [0, 0]]]}},
        "body.geometry",
    ),
    (
        {"geometry": {"type": "Polygon", "coordinates": [[0, 0], [0, 1], [1, 1], [0, 0]]}},
        "body.geometry",
    ),
    ({"geometry": {"type": "Polygon", "coordinates": []}}, "body.geometry"),
    (
        {"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [0, 1], [1, True], [0, 0]]]}},
        "body.geometry",
    ),
    # Over the bounds: 5,001 positions in one closed ring; a foreign member over 256 KiB.
    (
        {
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[0, 0], *([i, 1] for i in range(1, 5000)), [0, 0]]],
            }
        },
        "body.geometry",
    ),
    ({"geometry": {**SQUARE, "note": "x" * (256 * 1024)}}, "body.geometry"),
    ({"capacity": -1}, "body.capacity"),
    ({"capacity": 100_001}, "body.capacity"),
    ({"capacity": 2.5}, "body.capacity"),
    ({"capacity": "many"}, "body.capacity"),
]


async def test_bad_room_is_refused(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    url = f"/v1/tenants/{tenant['id']}/rooms/r1"
    for overrides, field in BAD_ROOMS:
        body = assert_problem(await client.put(url, json=room(**overrides), headers=ADMIN), 422)
        assert field in {error["field"] for error in body["errors"]}, overrides
        assert_problem(await client.get(url, headers=ADMIN), 404)


async def test_bad_room_id_is_refused(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    url = f"/v1/tenants/{tenant['id']}/rooms/-starts-with-dash"
    body = assert_problem(await client.put(url, json=room(), headers=ADMIN), 422)
    assert body["errors"][0]["field"] == "path.room"


async def test_other_geometries_are_accepted(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    geometries = [
        {"type": "Point", "coordinates": [8.68, 50.11, 12.5]},
        # As large as a geometry may be: 5,000 positions.
        {
            "type": "Polygon",
            "coordinates": [[[0, 0], *([i, 1.25] for i in range(1, 4999)), [0, 0]]],
        },
        {"type": "MultiPolygon", "coordinates": [SQUARE["coordinates"]]},
        {"type": "GeometryCollection", "geometries": [{"type": "Point", "coordinates": [1, 2]}]},
    ]
    for index, geometry in enumerate(geometries):
        url = f"/v1/tenants/{tenant['id']}/rooms/g{index}"
        response = await client.put(url, json=room(geometry=geometry), headers=ADMIN)
        assert response.status_code == 201, response.text
        assert response.json()["geometry"] == geometry
