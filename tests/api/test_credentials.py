"""A tenant's credentials through the admin API: named read tokens (create, list, revoke, last
use), the signing secret's rotation with its overlap, and the audit log of every admin change
(on every engine)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx
import pytest

from bookingcache.api.audit import admin_fingerprint
from bookingcache.clock import FixedClock
from tests.support.auth import ADMIN, bearer
from tests.support.problems import assert_problem
from tests.support.signing import sign

pytestmark = pytest.mark.usefixtures("reader_route")


async def _whoami(client: httpx.AsyncClient, tenant_id: str, token: str) -> int:
    response = await client.get(f"/v1/tenants/{tenant_id}/whoami", headers=bearer(token))
    return response.status_code


async def test_named_read_tokens_are_made_listed_and_revoked(
    client: httpx.AsyncClient, tenant: dict[str, Any], clock: FixedClock
) -> None:
    tenant_id = tenant["id"]
    tokens = f"/v1/tenants/{tenant_id}/read-tokens"
    made = await client.post(tokens, json={"name": "lobby-displays"}, headers=ADMIN)
    assert made.status_code == 201, made.text
    lobby = made.json()
    assert lobby["name"] == "lobby-displays"
    assert lobby["last_used_at"] is None
    assert lobby["token"].startswith(f"{tenant_id}.")
    assert await _whoami(client, tenant_id, lobby["token"]) == 200
    assert await _whoami(client, tenant_id, tenant["secrets"]["read_token"]) == 200

    again = await client.post(tokens, json={"name": "lobby-displays"}, headers=ADMIN)
    assert assert_problem(again, 409)["type"].endswith("conflict")
    for bad in ({"name": "Lobby Displays"}, {"name": ""}, {}, {"name": "x", "token": "mine"}):
        assert (await client.post(tokens, json=bad, headers=ADMIN)).status_code == 422
    unknown = await client.post("/v1/tenants/nobody/read-tokens", json={"name": "x"}, headers=ADMIN)
    assert assert_problem(unknown, 404)["type"].endswith("not-found")

    listed = (await client.get(tokens, headers=ADMIN)).json()["read_tokens"]
    assert [token["name"] for token in listed] == ["default", "lobby-displays"]
    assert all(set(token) == {"name", "created_at", "last_used_at"} for token in listed)
    assert lobby["token"] not in json.dumps(listed)

    revoked = await client.delete(f"{tokens}/default", headers=ADMIN)
    assert revoked.status_code == 204
    # At once in this process: the revoked token is a wrong token now.
    assert await _whoami(client, tenant_id, tenant["secrets"]["read_token"]) == 401
    assert await _whoami(client, tenant_id, lobby["token"]) == 200
    assert assert_problem(await client.delete(f"{tokens}/default", headers=ADMIN), 404)[
        "type"
    ].endswith("not-found")
    listed = (await client.get(tokens, headers=ADMIN)).json()["read_tokens"]
    assert [token["name"] for token in listed] == ["lobby-displays"]


async def test_a_read_tokens_last_use_is_written_with_the_next_refresh(
    client: httpx.AsyncClient, tenant: dict[str, Any], clock: FixedClock
) -> None:
    tenant_id = tenant["id"]
    used_at = clock.now()
    assert await _whoami(client, tenant_id, tenant["secrets"]["read_token"]) == 200
    clock.advance(dt.timedelta(seconds=6))  # past BOOKINGCACHE_READ_TOKEN_REFRESH_S (5 s)
    made = await client.post(
        f"/v1/tenants/{tenant_id}/read-tokens", json={"name": "phones"}, headers=ADMIN
    )
    phones = made.json()["token"]
    assert await _whoami(client, tenant_id, phones) == 200  # reads again: writes the uses
    listed = (await client.get(f"/v1/tenants/{tenant_id}/read-tokens", headers=ADMIN)).json()
    last_used = {token["name"]: token["last_used_at"] for token in listed["read_tokens"]}
    assert last_used == {"default": used_at.isoformat().replace("+00:00", "Z"), "phones": None}


def _relay(tenant_id: str, secret: str, at: dt.datetime) -> tuple[str, bytes, dict[str, str]]:
    target = f"/v1/tenants/{tenant_id}/notifications"
    body = json.dumps({"changes": [], "lifecycle": [], "resync": []}).encode()
    headers = {**sign(secret, "POST", target, body, at=at), "Content-Type": "application/json"}
    return target, body, headers


async def _relay_status(client: httpx.AsyncClient, tenant_id: str, secret: str, at: Any) -> int:
    target, body, headers = _relay(tenant_id, secret, at)
    return (await client.post(target, content=body, headers=headers)).status_code


async def test_both_signing_secrets_verify_during_the_overlap_and_only_then(
    client: httpx.AsyncClient, tenant: dict[str, Any], clock: FixedClock
) -> None:
    tenant_id = tenant["id"]
    old = tenant["secrets"]["signing_secret"]
    assert await _relay_status(client, tenant_id, old, clock.now()) == 202
    rotate = f"/v1/tenants/{tenant_id}/signing-secret:rotate"
    rotated = await client.post(rotate, json={"overlap_s": 3600}, headers=ADMIN)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["signing_secret"]
    assert new.startswith("whsec_")
    assert new != old
    until = dt.datetime.fromisoformat(rotated.json()["previous_valid_until"])
    assert until == clock.now() + dt.timedelta(hours=1)
    assert await _relay_status(client, tenant_id, old, clock.now()) == 202
    assert await _relay_status(client, tenant_id, new, clock.now()) == 202
    clock.advance(dt.timedelta(hours=1))
    assert await _relay_status(client, tenant_id, old, clock.now()) == 401
    assert await _relay_status(client, tenant_id, new, clock.now()) == 202
    # Without a body the overlap is a day; a bad one is refused.
    default = await client.post(rotate, headers=ADMIN)
    assert default.status_code == 200, default.text
    until = dt.datetime.fromisoformat(default.json()["previous_valid_until"])
    assert until == clock.now() + dt.timedelta(days=1)
    for bad in ({"overlap_s": -1}, {"overlap_s": 10**9}, {"overlap": 5}):
        assert (await client.post(rotate, json=bad, headers=ADMIN)).status_code == 422
    unknown = await client.post("/v1/tenants/nobody/signing-secret:rotate", headers=ADMIN)
    assert assert_problem(unknown, 404)["type"].endswith("not-found")


async def test_every_admin_change_is_in_the_audit_log_without_secrets(
    client: httpx.AsyncClient, tenant: dict[str, Any], tenant_id: str, admin_token: str
) -> None:
    base = f"/v1/tenants/{tenant_id}"
    changes = [
        client.patch(base, json={"title_policy": "hide"}, headers=ADMIN),
        client.put(
            f"{base}/rooms/r-1", json={"mailbox": "r1@t.example", "name": "R1"}, headers=ADMIN
        ),
        client.post(
            f"{base}/rooms:import",
            content=b"room_id,mailbox,name\nr-2,r2@t.example,R2\n",
            headers={**ADMIN, "Content-Type": "text/csv"},
        ),
        client.delete(f"{base}/rooms/r-2", headers=ADMIN),
        client.post(f"{base}/read-tokens", json={"name": "kiosk"}, headers=ADMIN),
        client.delete(f"{base}/read-tokens/kiosk", headers=ADMIN),
        client.post(f"{base}/signing-secret:rotate", headers=ADMIN),
    ]
    answers = [await change for change in changes]
    assert all(answer.status_code < 300 for answer in answers), [a.text for a in answers]
    # Reads and refused calls are not changes.
    await client.get(base, headers=ADMIN)
    await client.patch(base, json={"title_policy": "loud"}, headers=ADMIN)

    page = await client.get("/v1/audit", params={"tenant": tenant_id}, headers=ADMIN)
    assert page.status_code == 200, page.text
    entries = page.json()["entries"]
    assert [(e["action"], e["target"]) for e in entries] == [
        ("signing_secret.rotate", None),
        ("read_token.revoke", "kiosk"),
        ("read_token.create", "kiosk"),
        ("room.unlink", "r-2"),
        ("rooms.import", None),
        ("room.link", "r-1"),
        ("tenant.update", None),
        ("tenant.create", None),
    ]
    assert {e["actor"] for e in entries} == {admin_fingerprint(admin_token)}
    assert admin_token[:12] not in json.dumps(entries)
    assert {e["client"] for e in entries} == {"127.0.0.1"}
    assert entries[-2]["details"] == {"title_policy": "hide"}
    assert entries[0]["details"] == {"overlap_s": 86400}
    assert entries[4]["details"] == {"created": 1, "updated": 0}
    text = json.dumps(entries)
    for secret in (*tenant["secrets"].values(), answers[4].json()["token"]):
        assert secret not in text
    assert answers[6].json()["signing_secret"] not in text

    # Newest first, in pages.
    first = (await client.get("/v1/audit", params={"limit": 3}, headers=ADMIN)).json()
    assert [e["action"] for e in first["entries"]] == [e["action"] for e in entries[:3]]
    older = await client.get(
        "/v1/audit", params={"limit": 3, "before": first["next_before"]}, headers=ADMIN
    )
    assert [e["action"] for e in older.json()["entries"]] == [e["action"] for e in entries[3:6]]
    for bad in ({"limit": 0}, {"before": 0}, {"tenant": "Not A Tenant"}, {"tennant": "x"}):
        assert (await client.get("/v1/audit", params=bad, headers=ADMIN)).status_code == 422
    reader = bearer(tenant["secrets"]["read_token"])
    assert (await client.get("/v1/audit", headers=reader)).status_code == 403
    assert (await client.get("/v1/audit")).status_code == 401
