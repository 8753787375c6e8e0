"""Entra ID as the emulator plays it: app registrations with application permissions and an
optional mailbox scope (RBAC for Applications), the client-credentials token endpoint and the
OpenID configuration MSAL reads, and bearer-token checks on every Graph request.

Access tokens are JWTs (HS256 over a per-run secret) carrying ``appid``, ``tid``, ``roles`` and
``exp`` like Entra's; they expire after 60-90 minutes unless a fixed lifetime is configured.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from graph_emulator.errors import GraphError

if TYPE_CHECKING:
    from graph_emulator.directory import Mailbox
    from graph_emulator.state import EmulatorState

GRAPH_AUDIENCE = "https://graph.microsoft.com"
# The resource identifiers Entra ID accepts for Microsoft Graph in ``<resource>/.default``: its
# application ID URI (with or without a trailing slash) and its application id.
GRAPH_RESOURCES = {
    "https://graph.microsoft.com": GRAPH_AUDIENCE,
    "00000003-0000-0000-c000-000000000000": GRAPH_AUDIENCE,
}
# Other Microsoft resources every tenant has: Entra issues their tokens, and Graph refuses them
# (401, wrong audience). A wrong scope constant fails at the first Graph request, as it would.
OTHER_RESOURCES = {
    "https://outlook.office365.com": "https://outlook.office365.com",
    "https://outlook.office.com": "https://outlook.office.com",
    "00000002-0000-0ff1-ce00-000000000000": "https://outlook.office365.com",
    "https://management.azure.com": "https://management.azure.com",
}
# Scopes MSAL may add to any request; they name no resource.
OIDC_SCOPES = {"openid", "profile", "offline_access", "email"}
READ = "Calendars.Read"
READ_BASIC = "Calendars.ReadBasic.All"
READ_WRITE = "Calendars.ReadWrite"
ACCESS_DENIED_SCOPE = (
    "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy "
    "settings."
)
ACCESS_DENIED = "Access is denied. Check credentials and try again."

Need = Literal["read", "readbasic", "write"]


@dataclass
class App:
    client_id: str
    client_secret: str
    display_name: str
    roles: set[str] = field(default_factory=set)
    # Mailbox ids the app may reach; None = the whole tenant.
    mailbox_scope: set[str] | None = None

    def public_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "display_name": self.display_name,
            "roles": sorted(self.roles),
            "mailbox_scope": sorted(self.mailbox_scope) if self.mailbox_scope is not None else None,
        }


@dataclass(frozen=True)
class AppPrincipal:
    app_id: str
    roles: frozenset[str]
    mailbox_scope: frozenset[str] | None

    @property
    def can_read_full(self) -> bool:
        return READ in self.roles or READ_WRITE in self.roles


class AppRegistry:
    def __init__(self) -> None:
        self._apps: dict[str, App] = {}

    def add(self, app: App) -> App:
        self._apps[app.client_id] = app
        return app

    def get(self, client_id: str) -> App | None:
        return self._apps.get(client_id)

    def all(self) -> list[App]:
        return list(self._apps.values())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(
    state: EmulatorState, app: App, *, audience: str = GRAPH_AUDIENCE
) -> tuple[str, int]:
    config = state.config
    lifetime = config.token_lifetime_s
    if lifetime is None:
        lifetime = state.rng.randint(config.token_lifetime_min_s, config.token_lifetime_max_s)
    now = int(state.clock.now().timestamp())
    token_id = _b64(secrets.token_bytes(16))
    header = {"typ": "JWT", "alg": "HS256", "kid": "emulator"}
    claims = {
        "aud": audience,
        "iss": f"https://sts.windows.net/{state.tenant_id}/",
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "appid": app.client_id,
        "app_displayname": app.display_name,
        "idtyp": "app",
        "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, app.client_id)),
        "roles": sorted(app.roles),
        "tid": state.tenant_id,
        "uti": token_id,
        "ver": "1.0",
    }
    state.identity_faults.issued_token(token_id, app.client_id, now + lifetime, state.clock.now())
    signing_input = (
        _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    ).encode()
    signature = hmac.new(state.token_secret, signing_input, hashlib.sha256).digest()
    return signing_input.decode() + "." + _b64(signature), lifetime


def _unauthorized(message: str) -> GraphError:
    return GraphError(
        401,
        "InvalidAuthenticationToken",
        message,
        headers={"WWW-Authenticate": 'Bearer realm="", error="invalid_token"'},
    )


def verify_token(state: EmulatorState, token: str) -> AppPrincipal:
    parts = token.split(".")
    if len(parts) != 3:
        raise _unauthorized("IDX14100: JWT is not well formed, there are no dots (.).")
    try:
        expected = hmac.new(
            state.token_secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256
        ).digest()
        signature = _unb64(parts[2])
        claims = json.loads(_unb64(parts[1]))
    except (ValueError, json.JSONDecodeError) as exc:
        raise _unauthorized("CompactToken parsing failed with error code: 80049217") from exc
    if not hmac.compare_digest(expected, signature) or not isinstance(claims, dict):
        raise _unauthorized("Invalid signature.")
    if claims.get("tid") != state.tenant_id:
        raise _unauthorized("Invalid audience.")
    if claims.get("aud") != GRAPH_AUDIENCE:
        # A token Entra issued for another resource (a wrong scope constant).
        raise _unauthorized("Access token validation failure. Invalid audience.")
    now = state.clock.now().timestamp()
    if not isinstance(claims.get("exp"), int) or now >= claims["exp"]:
        raise _unauthorized("Lifetime validation failed, the token is expired.")
    if state.identity_faults.is_revoked(claims.get("uti")):
        raise _unauthorized("The access token has been revoked.")
    app = state.apps.get(str(claims.get("appid")))
    if app is None:
        raise _unauthorized("Invalid application.")
    # Grants and scope are read live, so an admin change applies to tokens already issued.
    return AppPrincipal(
        app_id=app.client_id,
        roles=frozenset(app.roles),
        mailbox_scope=frozenset(app.mailbox_scope) if app.mailbox_scope is not None else None,
    )


async def authenticate(
    request: Request, state: EmulatorState, *, count: bool = True
) -> AppPrincipal:
    """The caller's app; with ``count``, one request against the app's global budget (a
    ``$batch`` envelope does not count, its members do)."""
    header = request.headers.get("authorization", "")
    if not header.strip():
        raise _unauthorized("Access token is empty.")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("Access token validation failure. Invalid audience.")
    principal = verify_token(state, token.strip())
    if count:
        state.throttle.admit_app(principal.app_id)
    return principal


def require_mailbox(principal: AppPrincipal, mailbox: Mailbox, *, need: Need) -> None:
    """403 ``ErrorAccessDenied`` unless the app's grants and mailbox scope cover the request."""
    roles = principal.roles
    if need == "write":
        allowed = READ_WRITE in roles
    elif need == "read":
        allowed = READ in roles or READ_WRITE in roles
    else:
        allowed = bool(roles & {READ, READ_WRITE, READ_BASIC})
    if not allowed:
        raise GraphError(403, "ErrorAccessDenied", ACCESS_DENIED)
    if principal.mailbox_scope is not None and mailbox.id not in principal.mailbox_scope:
        raise GraphError(403, "ErrorAccessDenied", ACCESS_DENIED_SCOPE)


def _aad_error(
    status: int, error: str, code: int, description: str, now: dt.datetime
) -> JSONResponse:
    trace = str(uuid.uuid4())
    return JSONResponse(
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description} Trace ID: {trace} "
            f"Correlation ID: {trace} Timestamp: {now.strftime('%Y-%m-%d %H:%M:%SZ')}",
            "error_codes": [code],
            "timestamp": now.strftime("%Y-%m-%d %H:%M:%SZ"),
            "trace_id": trace,
            "correlation_id": trace,
        },
        status_code=status,
    )


def routes(state: EmulatorState) -> list[Route]:
    def authority_base(request: Request, tenant: str) -> str:
        return str(request.base_url).rstrip("/") + "/" + tenant

    async def openid_configuration(request: Request) -> Response:
        tenant = request.path_params["tenant"]
        if tenant not in (state.tenant_id, "organizations", "common"):
            return _aad_error(
                400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.", state.clock.now()
            )
        base = authority_base(request, state.tenant_id)
        return JSONResponse(
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{base}/v2.0",
                "request_uri_parameter_supported": False,
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
            }
        )

    async def token(request: Request) -> Response:
        failed = await state.identity_faults.token_request(state.clock)
        if failed is not None:
            return failed
        now = state.clock.now()
        tenant = request.path_params["tenant"]
        if tenant != state.tenant_id:
            return _aad_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.", now)
        raw = await request.body()
        try:
            values = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            values = {}
        if not values:
            return _aad_error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
                now,
            )
        if values.get("grant_type") != "client_credentials":
            return _aad_error(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
                now,
            )
        scope = values.get("scope", "")
        resources = [s for s in scope.split() if s.lower() not in OIDC_SCOPES]
        if len(resources) != 1 or not resources[0].endswith("/.default"):
            return _aad_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows "
                "must have a scope value with /.default suffixed to the resource identifier "
                "(application ID URI).",
                now,
            )
        resource = resources[0].removesuffix("/.default").rstrip("/")
        audience = GRAPH_RESOURCES.get(resource.lower()) or OTHER_RESOURCES.get(resource.lower())
        if audience is None:
            return _aad_error(
                400,
                "invalid_resource",
                500011,
                f"The resource principal named {resource} was not found in the tenant named "
                f"{state.tenant_id}. This can happen if the application has not been installed "
                "by the administrator of the tenant or consented to by any user in the tenant. "
                "You might have sent your authentication request to the wrong tenant.",
                now,
            )
        client_id = values.get("client_id", "")
        app = state.apps.get(client_id)
        if app is None:
            return _aad_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory.",
                now,
            )
        secret = values.get("client_secret", "")
        if not hmac.compare_digest(secret.encode(), app.client_secret.encode()):
            return _aad_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request "
                f"is the client secret value, not the client secret ID, for a secret added to "
                f"app '{client_id}'.",
                now,
            )
        access_token, lifetime = issue_token(state, app, audience=audience)
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": access_token,
            },
            headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"},
        )

    return [
        Route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            openid_configuration,
            methods=["GET"],
        ),
        Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
    ]
