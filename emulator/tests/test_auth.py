"""Token endpoint, token expiry, grants and the RBAC mailbox scope."""

from __future__ import annotations

import datetime as dt
from typing import Any

from graph_emulator.auth import App
from graph_emulator.config import EmulatorConfig

WINDOW = {"startDateTime": "2026-03-16T00:00:00Z", "endDateTime": "2026-03-23T00:00:00Z"}


async def token_request(graph: Any, **overrides: str) -> Any:
    app = graph.tenant.apps["full"]
    form = {
        "grant_type": "client_credentials",
        "client_id": app.client_id,
        "client_secret": app.client_secret,
        "scope": "https://graph.microsoft.com/.default",
    } | overrides
    tenant = overrides.pop("tenant", graph.tenant.state.tenant_id)
    form.pop("tenant", None)
    return await graph.http.post(f"/{tenant}/oauth2/v2.0/token", data=form)


async def test_token_response_matches_the_sample(graph: Any, load_sample: Any) -> None:
    response = await token_request(graph)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == set(load_sample("token-response.json"))
    # Entra hands out 60-90 minute tokens unless a fixed lifetime is configured.
    assert 3600 <= body["expires_in"] <= 5400
    assert body["access_token"].count(".") == 2


async def test_token_errors_look_like_entra(graph: Any) -> None:
    wrong = await token_request(graph, client_secret="nope")
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    assert wrong.json()["error_codes"] == [7000215]
    unknown = await token_request(graph, client_id="00000000-0000-0000-0000-000000000000")
    assert unknown.status_code == 400
    assert unknown.json()["error"] == "unauthorized_client"
    scope = await token_request(graph, scope="Calendars.Read")
    assert scope.status_code == 400
    assert scope.json()["error"] == "invalid_scope"
    grant = await token_request(graph, grant_type="password")
    assert grant.status_code == 400
    assert grant.json()["error"] == "unsupported_grant_type"
    tenant = await token_request(graph, tenant="contoso.invalid")
    assert tenant.status_code == 400


async def test_only_a_graph_scope_gets_a_token_graph_accepts(graph: Any) -> None:
    path = f"/v1.0/users/{graph.tenant.room.upn}/calendar"
    # Graph's application ID URI and its application id both name Microsoft Graph.
    for scope in (
        "https://graph.microsoft.com/.default",
        "00000003-0000-0000-c000-000000000000/.default",
    ):
        response = await token_request(graph, scope=scope)
        assert response.status_code == 200, scope
        bearer = {"Authorization": f"Bearer {response.json()['access_token']}"}
        assert (await graph.http.get(path, headers=bearer)).status_code == 200, scope
    # Exchange Online's resource is real: Entra issues its token, Graph refuses it.
    outlook = await token_request(graph, scope="https://outlook.office365.com/.default")
    assert outlook.status_code == 200
    bearer = {"Authorization": f"Bearer {outlook.json()['access_token']}"}
    refused = await graph.http.get(path, headers=bearer)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert "Invalid audience" in refused.json()["error"]["message"]
    # A resource the tenant does not have (the app exposes no API of its own).
    client_id = graph.tenant.apps["full"].client_id
    for scope in (f"api://{client_id}/.default", "https://graph.example/.default"):
        unknown = await token_request(graph, scope=scope)
        assert unknown.status_code == 400, scope
        assert unknown.json()["error"] == "invalid_resource"
        assert unknown.json()["error_codes"] == [500011]
    two = await token_request(
        graph, scope="https://graph.microsoft.com/.default https://outlook.office.com/.default"
    )
    assert two.status_code == 400
    assert two.json()["error"] == "invalid_scope"


async def test_openid_configuration_for_msal(graph: Any) -> None:
    tenant_id = graph.tenant.state.tenant_id
    response = await graph.http.get(f"/{tenant_id}/v2.0/.well-known/openid-configuration")
    body = response.json()
    assert body["token_endpoint"] == f"https://graph.test/{tenant_id}/oauth2/v2.0/token"
    assert body["authorization_endpoint"].startswith(f"https://graph.test/{tenant_id}/")


async def test_missing_bad_and_expired_tokens_get_401(
    tenant_factory: Any, graph_factory: Any
) -> None:
    tenant = tenant_factory(EmulatorConfig(token_lifetime_s=600))
    path = f"/v1.0/users/{tenant.room.id}/calendarView"
    async with graph_factory(tenant) as graph:
        assert (await graph.http.get(path, params=WINDOW)).status_code == 200
        tenant.state.clock.advance(dt.timedelta(seconds=601))
        expired = await graph.http.get(path, params=WINDOW)
        assert expired.status_code == 401
        assert expired.json()["error"]["code"] == "InvalidAuthenticationToken"
        assert "WWW-Authenticate" in expired.headers
        for header in ({"Authorization": ""}, {"Authorization": "Bearer abc.def.ghi"}):
            response = await graph.http.get(path, params=WINDOW, headers=header)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "InvalidAuthenticationToken"


async def test_scope_and_grants_are_enforced(tenant: Any, graph: Any, load_sample: Any) -> None:
    await graph.as_app("scoped")
    inside = await graph.http.get(f"/v1.0/users/{tenant.room.upn}/calendarView", params=WINDOW)
    assert inside.status_code == 200
    outside = await graph.http.get(
        f"/v1.0/users/{tenant.other_room.upn}/calendarView", params=WINDOW
    )
    assert outside.status_code == 403
    sample = load_sample("error-access-denied.json")
    assert outside.json()["error"]["code"] == sample["error"]["code"]
    assert outside.json()["error"]["message"] == sample["error"]["message"]
    # Calendars.Read does not allow writes.
    write = await graph.http.post(
        f"/v1.0/users/{tenant.room.upn}/events",
        json={
            "subject": "x",
            "start": tenant.when("2026-03-17T09:00:00"),
            "end": tenant.when("2026-03-17T10:00:00"),
        },
    )
    assert write.status_code == 403
    assert write.json()["error"]["code"] == "ErrorAccessDenied"
    # A change of the app's scope applies at once, even to tokens already issued.
    tenant.apps["scoped"].mailbox_scope = {tenant.other_room.id}
    now_denied = await graph.http.get(f"/v1.0/users/{tenant.room.upn}/calendarView", params=WINDOW)
    assert now_denied.status_code == 403


async def test_directory_reads_need_directory_permissions(tenant: Any, graph: Any) -> None:
    # Calendars.Read and Calendars.ReadWrite ("full") cover no directory reads.
    user = await graph.http.get(f"/v1.0/users/{tenant.room.upn}")
    assert user.status_code == 403
    assert user.json()["error"]["code"] == "Authorization_RequestDenied"
    rooms = await graph.http.get("/v1.0/places/microsoft.graph.room")
    assert rooms.status_code == 403
    assert rooms.json()["error"]["code"] == "ErrorAccessDenied"
    # Each read needs its own permission.
    tenant.apps["directory"] = tenant.state.apps.add(
        App("directory-reader", "directory-secret", "directory", roles={"Place.Read.All"})
    )
    await graph.as_app("directory")
    assert (await graph.http.get("/v1.0/places/microsoft.graph.room")).status_code == 200
    assert (await graph.http.get(f"/v1.0/users/{tenant.room.upn}")).status_code == 403
    tenant.state.apps.get("directory-reader").roles = {"User.Read.All"}
    assert (await graph.http.get(f"/v1.0/users/{tenant.room.upn}")).status_code == 200
    assert (await graph.http.get("/v1.0/places/microsoft.graph.room")).status_code == 403


async def test_directory_and_places(tenant: Any, graph: Any) -> None:
    tenant.apps["directory"] = tenant.state.apps.add(
        App(
            "directory-reader",
            "directory-secret",
            "directory",
            roles={"User.Read.All", "Place.Read.All"},
        )
    )
    await graph.as_app("directory")
    user = await graph.http.get(f"/v1.0/users/{tenant.room.upn}")
    assert user.status_code == 200
    assert user.json()["id"] == tenant.room.id
    assert user.json()["userPrincipalName"] == tenant.room.upn
    by_id = await graph.http.get(f"/v1.0/users/{tenant.room.id}", params={"$select": "displayName"})
    assert set(by_id.json()) == {"@odata.context", "id", "displayName"}
    rooms = await graph.http.get("/v1.0/places/microsoft.graph.room")
    value = rooms.json()["value"]
    assert {r["emailAddress"] for r in value} == {
        tenant.room.upn,
        tenant.tentative_room.upn,
        tenant.other_room.upn,
    }
    first = next(r for r in value if r["emailAddress"] == tenant.room.upn)
    assert first["capacity"] == 8
    assert first["building"] == "A"
    assert first["floorNumber"] == 1
    paged = await graph.http.get("/v1.0/places/microsoft.graph.room", params={"$top": "2"})
    assert len(paged.json()["value"]) == 2
    assert "$skip=2" in paged.json()["@odata.nextLink"]
