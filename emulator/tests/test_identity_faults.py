"""The identity platform's faults through the control API: the token endpoint failing as Entra
does in an incident (503 ``temporarily_unavailable`` with ``Retry-After``, a hang), and tokens
revoked before their expiry (Graph refuses them with 401 ``InvalidAuthenticationToken``)."""

from __future__ import annotations

import asyncio
from typing import Any

from conftest import GRAPH_SCOPE, GraphClient, get_token


async def token_request(graph: GraphClient, name: str = "full") -> Any:
    app = graph.tenant.apps[name]
    return await graph.http.post(
        f"/{graph.tenant.state.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "scope": GRAPH_SCOPE[0],
        },
    )


async def test_unavailable_token_endpoint_answers_entra_503_for_count(graph: GraphClient) -> None:
    created = await graph.http.post(
        "/_emulator/faults/token", json={"kind": "unavailable", "count": 2, "retry_after_s": 3}
    )
    assert created.status_code == 201
    assert created.json() == {
        "kind": "unavailable",
        "remaining": 2,
        "probability": 1.0,
        "fired": 0,
        "retry_after_s": 3,
    }
    assert (await graph.http.get("/_emulator/faults")).json()["token"]["remaining"] == 2
    for _ in range(2):
        failed = await token_request(graph)
        assert failed.status_code == 503
        assert failed.headers["retry-after"] == "3"
        body = failed.json()
        assert body["error"] == "temporarily_unavailable"
        assert body["error_codes"] == [90033]
        assert body["error_description"].startswith("AADSTS90033: ")
    assert (await token_request(graph)).status_code == 200  # the count is spent
    assert (await graph.http.get("/_emulator/faults")).json()["token"] is None


async def test_timeout_fault_hangs_until_cleared_and_bad_input_is_400(graph: GraphClient) -> None:
    assert (
        await graph.http.post("/_emulator/faults/token", json={"kind": "timeout", "timeout_s": 60})
    ).status_code == 201
    pending = asyncio.ensure_future(token_request(graph))
    await asyncio.sleep(0.05)
    assert not pending.done()  # hanging on the (virtual) clock
    await graph.http.post("/_emulator/clock/advance", json={"seconds": 61})
    answer = await asyncio.wait_for(pending, timeout=30)
    assert answer.status_code == 504
    assert (await graph.http.delete("/_emulator/faults/token")).status_code == 204
    assert (await token_request(graph)).status_code == 200
    for body in (
        {"kind": "crash"},
        {"kind": "unavailable", "count": 0},
        {"kind": "timeout", "probability": 2},
    ):
        refused = await graph.http.post("/_emulator/faults/token", json=body)
        assert refused.status_code == 400, body
        assert refused.json()["error"]["code"] == "BadRequest"


async def test_revoked_tokens_get_401_and_new_tokens_work(graph: GraphClient) -> None:
    room = graph.tenant.room.upn
    assert (await graph.http.get(f"/v1.0/users/{room}/calendar/events")).status_code == 200
    other = await get_token(graph.http, graph.tenant.state, graph.tenant.apps["scoped"])
    unknown = await graph.http.post("/_emulator/tokens/revoke", json={"client_id": "nobody"})
    assert unknown.status_code == 400
    full_id = graph.tenant.apps["full"].client_id
    revoked = await graph.http.post("/_emulator/tokens/revoke", json={"client_id": full_id})
    assert revoked.status_code == 200
    assert revoked.json() == {"revoked": 1}
    refused = await graph.http.get(f"/v1.0/users/{room}/calendar/events")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "InvalidAuthenticationToken"
    # Another app's token is untouched; a token issued after the revocation is good.
    untouched = await graph.http.get(
        f"/v1.0/users/{room}/calendar/events", headers={"Authorization": f"Bearer {other}"}
    )
    assert untouched.status_code == 200
    await graph.as_app("full")
    assert (await graph.http.get(f"/v1.0/users/{room}/calendar/events")).status_code == 200
    everything = await graph.http.post("/_emulator/tokens/revoke")
    assert everything.json() == {"revoked": 2}
