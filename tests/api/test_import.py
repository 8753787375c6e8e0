from __future__ import annotations

import json
from typing import Any

import httpx

from tests.support.auth import ADMIN
from tests.support.problems import assert_problem

CSV = {**ADMIN, "content-type": "text/csv"}


async def rooms_of(client: httpx.AsyncClient, tenant_id: str) -> dict[str, dict[str, Any]]:
    response = await client.get(f"/v1/tenants/{tenant_id}/rooms", headers=ADMIN)
    assert response.status_code == 200, response.text
    return {r["room_id"]: r for r in response.json()["rooms"]}


async def test_csv_import(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    point = json.dumps({"type": "Point", "coordinates": [1.5, 2.5]}).replace('"', '""')
    text = (
        "room_id,mailbox,name,building,floor,time_zone,geometry,capacity\n"
        "r1,r1@contoso.com,One,HQ,1,Europe/Berlin,,12\n"
        f'r2,R2@contoso.com,"Two, the big one",HQ,2,,"{point}",\n'
        "\n"
        "r3,r3@contoso.com,Three,,,Eastern Standard Time,, 0 \n"
    )
    url = f"/v1/tenants/{tenant['id']}/rooms:import"
    response = await client.post(url, content=text.encode(), headers=CSV)
    assert response.status_code == 200, response.text
    assert response.json() == {"created": 3, "updated": 0}
    rooms = await rooms_of(client, tenant["id"])
    assert rooms["r2"]["name"] == "Two, the big one"
    assert rooms["r2"]["mailbox"] == "r2@contoso.com"
    assert rooms["r2"]["geometry"] == {"type": "Point", "coordinates": [1.5, 2.5]}
    assert rooms["r3"]["building"] is None
    assert rooms["r3"]["time_zone"] == "America/New_York"
    assert [rooms[r]["capacity"] for r in ("r1", "r2", "r3")] == [12, None, 0]

    again = "room_id,mailbox,name\nr1,r1@contoso.com,Renamed\nr4,r4@contoso.com,Four\n"
    response = await client.post(url, content=again.encode(), headers=CSV)
    assert response.json() == {"created": 1, "updated": 1}
    assert (await rooms_of(client, tenant["id"]))["r1"]["name"] == "Renamed"


async def test_csv_with_bad_rows_imports_nothing(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    text = (
        "room_id,mailbox,name,building,floor,time_zone\n"  # line 1
        "r1,r1@contoso.com,One,HQ,1,UTC\n"  # 2 fine
        "r2,not-a-mailbox,Two,HQ,1,UTC\n"  # 3 bad mailbox
        "r3,r3@contoso.com,Three,HQ,1,Moon/Base\n"  # 4 bad zone
        "r4,r4@contoso.com,Four,HQ\n"  # 5 too few fields
        "r1,r5@contoso.com,Dup,HQ,1,UTC\n"  # 6 duplicate id
        "r6,r6@contoso.com,,HQ,1,UTC\n"  # 7 no name
    )
    url = f"/v1/tenants/{tenant['id']}/rooms:import"
    response = await client.post(url, content=text.encode(), headers=CSV)
    body = assert_problem(response, 422)
    by_row = {(e["row"], e["field"]) for e in body["errors"]}
    assert by_row == {(3, "mailbox"), (4, "time_zone"), (5, "row"), (6, "room_id"), (7, "name")}
    assert "3, 4, 5, 6, 7" in body["detail"]
    assert await rooms_of(client, tenant["id"]) == {}


async def test_csv_header_problems(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    url = f"/v1/tenants/{tenant['id']}/rooms:import"
    for text in ("", "room_id,name\nr1,One\n", "room_id,mailbox,name,colour\n", '"unclosed\n'):
        body = assert_problem(await client.post(url, content=text.encode(), headers=CSV), 422)
        assert body["errors"][0]["row"] == 1, text
    body = assert_problem(
        await client.post(url, content=b"room_id,mailbox,name\n", headers=CSV), 422
    )
    assert "no rooms" in body["detail"]
    latin1 = "room_id,mailbox,name\nr1,r1@contoso.com,Caf\xe9\n".encode("latin-1")
    body = assert_problem(await client.post(url, content=latin1, headers=CSV), 422)
    assert "UTF-8" in body["detail"]


async def test_csv_bad_geometry_is_reported_by_line(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    text = (
        "room_id,mailbox,name,geometry\n"
        'r1,r1@contoso.com,One,"{not json"\n'
        'r2,r2@contoso.com,Two,"{""type"": ""Point"", ""coordinates"": [1]}"\n'
    )
    url = f"/v1/tenants/{tenant['id']}/rooms:import"
    body = assert_problem(await client.post(url, content=text.encode(), headers=CSV), 422)
    assert {(e["row"], e["field"]) for e in body["errors"]} == {(2, "geometry"), (3, "geometry")}


async def test_csv_bad_capacity_is_reported_by_line(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    text = (
        "room_id,mailbox,name,capacity\n"
        "r1,r1@contoso.com,One,-3\n"
        "r2,r2@contoso.com,Two,ten\n"
        "r3,r3@contoso.com,Three,4.5\n"
        "r4,r4@contoso.com,Four,4\n"
    )
    url = f"/v1/tenants/{tenant['id']}/rooms:import"
    body = assert_problem(await client.post(url, content=text.encode(), headers=CSV), 422)
    assert {(e["row"], e["field"]) for e in body["errors"]} == {
        (2, "capacity"),
        (3, "capacity"),
        (4, "capacity"),
    }
    assert await rooms_of(client, tenant["id"]) == {}


async def test_json_import(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    url = f"/v1/tenants/{tenant['id']}/rooms:import"
    rooms = [
        {"room_id": "j1", "mailbox": "j1@contoso.com", "name": "J1", "floor": "3", "capacity": 6},
        {"room_id": "j2", "mailbox": "j2@contoso.com", "name": "J2", "geometry": None},
    ]
    response = await client.post(url, json={"rooms": rooms}, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json() == {"created": 2, "updated": 0}
    stored = await rooms_of(client, tenant["id"])
    assert {room_id: room["capacity"] for room_id, room in stored.items()} == {"j1": 6, "j2": None}


async def test_json_import_reports_rows_from_one(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    url = f"/v1/tenants/{tenant['id']}/rooms:import"
    rooms = [
        {"room_id": "j1", "mailbox": "j1@contoso.com", "name": "J1"},
        "not an object",
        {"room_id": "j3", "mailbox": "j3@contoso.com"},
        {"room_id": "j4", "mailbox": "j4@contoso.com", "name": "J4", "colour": "red"},
    ]
    body = assert_problem(await client.post(url, json={"rooms": rooms}, headers=ADMIN), 422)
    assert {(e["row"], e["field"]) for e in body["errors"]} == {
        (2, "row"),
        (3, "name"),
        (4, "colour"),
    }
    assert await rooms_of(client, tenant["id"]) == {}
    documents: list[Any] = [[], {"rooms": "x"}, {"rooms": [], "extra": 1}]
    for document in documents:
        assert_problem(await client.post(url, json=document, headers=ADMIN), 422)


async def test_import_needs_csv_or_json(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    url = f"/v1/tenants/{tenant['id']}/rooms:import"
    response = await client.post(
        url, content=b"<rooms/>", headers={**ADMIN, "content-type": "application/xml"}
    )
    assert_problem(response, 415)


async def test_import_into_unknown_tenant(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/tenants/nobody/rooms:import", content=b"room_id,mailbox,name\n", headers=CSV
    )
    assert_problem(response, 404)


async def test_oversized_import_is_refused(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    url = f"/v1/tenants/{tenant['id']}/rooms:import"
    big = b"room_id,mailbox,name\n" + b"x" * (10 * 1024 * 1024 + 1)
    assert_problem(await client.post(url, content=big, headers=CSV), 413)
