"""The graph source with a tenant's own app and a certificate: MSAL signs the client assertion
with the stored private key, the identity platform can verify it with the certificate's public
key and find the certificate by its thumbprint, and a new certificate stored through the store
is used at the next read. The identity platform cannot run here and the Graph emulator takes
client secrets only, so its token endpoint is played by a handler that checks the assertion
as Entra documents it (RS256 JWT; x5t the SHA-1 thumbprint; iss and sub the client id; aud the
token endpoint; an expiry): https://learn.microsoft.com/en-us/entra/identity-platform/certificate-credentials
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from typing import Any
from urllib.parse import parse_qs

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from bookingcache.clock import FixedClock
from bookingcache.domain.tenancy import (
    CalendarState,
    EventSource,
    GraphAccess,
    GraphCredential,
    GraphPermission,
)
from bookingcache.settings import GraphSettings
from bookingcache.store.sql.store import SqlStore
from bookingcache.sync.sources.graph import GraphSource
from tests.support.tenants import TENANT, add_tenant

START = dt.datetime(2026, 3, 16, 6, 0, tzinfo=dt.UTC)
AUTHORITY = "https://login.identity.test"
GRAPH = "https://graph.identity.test/v1.0"
DIRECTORY = "6f1d2c3b-4a59-4e7d-8c1b-2a3b4c5d6e7f"
CLIENT_ID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
TOKEN_ENDPOINT = f"{AUTHORITY}/{DIRECTORY}/oauth2/v2.0/token"


def _certificate() -> tuple[str, str, rsa.RSAPublicKey]:
    """A private key (PEM), its self-signed certificate's SHA-1 thumbprint, its public key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bookingcache-graph")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(START - dt.timedelta(days=1))
        .not_valid_after(START + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    thumbprint = hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return pem, thumbprint, key.public_key()


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class IdentityPlatform:
    """The token endpoint of one app with registered certificates (by thumbprint), and a Graph
    that answers every calendarView with an empty page for the tokens it issued."""

    def __init__(self) -> None:
        self.certificates: dict[str, rsa.RSAPublicKey] = {}
        self.assertions: list[dict[str, Any]] = []
        self.issued: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/.well-known/openid-configuration"):
            base = f"{AUTHORITY}/{DIRECTORY}"
            return httpx.Response(
                200,
                json={
                    "issuer": f"{base}/v2.0",
                    "token_endpoint": TOKEN_ENDPOINT,
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                },
            )
        if str(request.url) == TOKEN_ENDPOINT:
            return self._token(parse_qs(request.content.decode()))
        if request.headers.get("authorization", "").removeprefix("Bearer ") in self.issued:
            return httpx.Response(200, json={"value": []})
        return httpx.Response(401, json={"error": {"code": "InvalidAuthenticationToken"}})

    def _token(self, form: dict[str, list[str]]) -> httpx.Response:
        refused = httpx.Response(401, json={"error": "invalid_client", "error_codes": [700027]})
        if form.get("client_assertion_type") != [
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        ] or form.get("client_id", [CLIENT_ID]) != [CLIENT_ID]:
            return refused
        header_b64, claims_b64, signature_b64 = form["client_assertion"][0].split(".")
        header = json.loads(_b64(header_b64))
        claims = json.loads(_b64(claims_b64))
        thumbprint = _b64(header["x5t"]).hex().upper()
        public_key = self.certificates.get(thumbprint)
        if public_key is None or header["alg"] != "RS256":
            return refused
        public_key.verify(
            _b64(signature_b64),
            f"{header_b64}.{claims_b64}".encode("ascii"),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        assert claims["iss"] == claims["sub"] == CLIENT_ID
        assert claims["aud"] == TOKEN_ENDPOINT
        assert 0 < claims["exp"] - claims.get("nbf", claims.get("iat", 0)) <= 3600
        self.assertions.append({"thumbprint": thumbprint, **claims})
        token = f"token-{len(self.assertions)}"
        self.issued.add(token)
        return httpx.Response(
            200, json={"token_type": "Bearer", "expires_in": 3600, "access_token": token}
        )


async def test_a_stored_certificate_signs_the_assertion_and_a_new_one_is_used_at_once(
    store: SqlStore,
) -> None:
    first_key, first_thumbprint, first_public = _certificate()
    second_key, second_thumbprint, second_public = _certificate()
    identity = IdentityPlatform()
    identity.certificates[first_thumbprint] = first_public
    access = GraphAccess(
        directory_tenant=DIRECTORY, client_id=CLIENT_ID, permission=GraphPermission.READ_BASIC
    )
    await add_tenant(store, source=EventSource.GRAPH, connector_url=None, rooms=1, graph=access)
    await store.update_tenant(
        TENANT,
        {
            "graph": access,
            "graph_credential": GraphCredential(private_key=first_key, thumbprint=first_thumbprint),
        },
    )
    source = GraphSource(
        GraphSettings(authority_host=AUTHORITY, graph_base_url=GRAPH),
        clock=FixedClock(START),
        store=store,
        transport=httpx.MockTransport(identity),
        access_refresh_s=0,
    )
    calendar = CalendarState(tenant_id=TENANT, mailbox="room-0@contoso.example", time_zone="UTC")
    window = {"start": START, "end": START + dt.timedelta(days=14)}
    try:
        assert await source.read_window(calendar, **window) == []
        assert [a["thumbprint"] for a in identity.assertions] == [first_thumbprint]
        # The customer rotates: the new certificate is registered, then stored.
        identity.certificates[second_thumbprint] = second_public
        await store.update_tenant(
            TENANT,
            {
                "graph_credential": GraphCredential(
                    private_key=second_key, thumbprint=second_thumbprint
                )
            },
        )
        del identity.certificates[first_thumbprint]
        assert await source.read_window(calendar, **window) == []
        assert [a["thumbprint"] for a in identity.assertions] == [
            first_thumbprint,
            second_thumbprint,
        ]
    finally:
        await source.aclose()
