from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from bookingcache_connector.app import create_app
from bookingcache_connector.auth import MsalTokenProvider, msal_http_client
from bookingcache_connector.config import Settings, certificate_credential, load_settings
from bookingcache_connector.errors import ConfigError
from bookingcache_connector.events import TitlePolicy

from .fakes import AUTHORITY_HOST, CLIENT_ID, TENANT_ID, sample
from .servers import ServerThread

BASE = {
    "CONNECTOR_TENANT_ID": TENANT_ID,
    "CONNECTOR_CLIENT_ID": CLIENT_ID,
    "CONNECTOR_CLIENT_SECRET": "s",
}


def test_defaults_point_at_microsoft() -> None:
    settings = load_settings(BASE)
    assert settings.authority == f"https://login.microsoftonline.com/{TENANT_ID}"
    assert settings.graph_url == "https://graph.microsoft.com/v1.0"
    assert settings.is_microsoft_authority
    assert settings.push_events is False
    assert settings.renew_below_hours == 48
    assert settings.expiration_minutes <= 10_080
    assert (settings.push_reconcile_s, settings.push_reconcile_rate_per_s) == (900.0, 5.0)
    assert settings.push_reconcile_healthy_s == 14_400.0
    assert settings.title_policy is TitlePolicy.SEND


def test_all_settings_read_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(
        {
            **BASE,
            "CONNECTOR_AUTHORITY": "https://127.0.0.1:8443",
            "CONNECTOR_GRAPH_URL": "https://127.0.0.1:8443/v1.0/",
            "CONNECTOR_PUSH_EVENTS": "true",
            "CONNECTOR_WINDOW_DAYS": "7",
            "CONNECTOR_CLIENT_STATES": "a, b",
            "CONNECTOR_WEBHOOK_SECRET": "whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB",
            "CONNECTOR_STATE_DIR": str(tmp_path),
            "CONNECTOR_PUSH_RECONCILE_S": "300",
            "CONNECTOR_PUSH_RECONCILE_RATE": "0.5",
            "CONNECTOR_PUSH_RECONCILE_HEALTHY_S": "1800",
            "CONNECTOR_TITLE_POLICY": "Withhold_Private",
        }
    )
    assert settings.push_reconcile_healthy_s == 1800.0
    assert settings.title_policy is TitlePolicy.WITHHOLD_PRIVATE
    assert (settings.push_reconcile_s, settings.push_reconcile_rate_per_s) == (300.0, 0.5)
    assert not settings.is_microsoft_authority
    assert settings.graph_url == "https://127.0.0.1:8443/v1.0"
    assert (settings.push_events, settings.window_days, settings.client_states) == (
        True,
        7,
        ("a", "b"),
    )


@pytest.mark.parametrize(
    "env",
    [
        {"CONNECTOR_TENANT_ID": TENANT_ID},
        {"CONNECTOR_TENANT_ID": TENANT_ID, "CONNECTOR_CLIENT_ID": CLIENT_ID},
        {**BASE, "CONNECTOR_PUSH_EVENTS": "perhaps"},
        {**BASE, "CONNECTOR_WINDOW_DAYS": "two"},
        {**BASE, "CONNECTOR_WEBHOOK_SECRET": "shared-password"},
        {**BASE, "CONNECTOR_WEBHOOK_SECRET": "whsec_QUFB,shared-password"},
        {**BASE, "CONNECTOR_PUSH_RECONCILE_S": "-1"},
        {**BASE, "CONNECTOR_PUSH_RECONCILE_RATE": "0"},
        {**BASE, "CONNECTOR_PUSH_RECONCILE_HEALTHY_S": "-5"},
        {**BASE, "CONNECTOR_TITLE_POLICY": "hide"},
    ],
)
def test_bad_settings_are_named(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"CONNECTOR_|boolean"):
        load_settings(env)


def write_certificate(path: Path) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bookingcache-connector")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()


def test_certificate_credential_through_msal(tmp_path: Path) -> None:
    pem = tmp_path / "connector.pem"
    thumbprint = write_certificate(pem)
    assert certificate_credential(pem)["thumbprint"] == thumbprint
    seen: list[dict[str, list[str]]] = []
    base = f"{AUTHORITY_HOST}/{TENANT_ID}"

    def identity(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("openid-configuration"):
            return httpx.Response(
                200,
                json={
                    "issuer": f"{base}/v2.0",
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                },
            )
        form = parse_qs(request.content.decode())
        seen.append(form)
        return httpx.Response(200, json=sample("token-response.json"))

    settings = Settings(
        tenant_id=TENANT_ID,
        client_id=CLIENT_ID,
        client_cert_path=pem,
        authority_host=AUTHORITY_HOST,
    )
    provider = MsalTokenProvider(
        settings, http_client=msal_http_client(settings, httpx.MockTransport(identity))
    )
    token = provider.token_sync()
    assert token == sample("token-response.json")["access_token"]
    assert provider.token_sync() == token
    assert len(seen) == 1
    [form] = seen
    assert form["client_assertion_type"] == [
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    ]
    header = json.loads(base64.urlsafe_b64decode(form["client_assertion"][0].split(".")[0] + "=="))
    assert base64.urlsafe_b64decode(header["x5t"] + "==").hex().upper() == thumbprint
    provider.close()


def test_certificate_file_without_key_is_refused(tmp_path: Path) -> None:
    pem = tmp_path / "only-cert.pem"
    write_certificate(pem)
    pem.write_text(pem.read_text().split("-----END PRIVATE KEY-----")[1])
    with pytest.raises(ConfigError, match="private key"):
        certificate_credential(pem)


def test_asgi_factory_builds_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {**BASE, "CONNECTOR_STATE_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    with ServerThread(create_app()) as server:
        response = httpx.get(f"{server.root}/healthz")
        assert response.status_code == 200
        health = response.json()
        assert health["status"] == "ok"
        assert health["loops"]["renewal"]["running"] is True  # started by the lifespan
        assert httpx.post(f"{server.root}/graph/notifications", content=b"{}").status_code == 503
        assert httpx.get(f"{server.root}/nowhere").status_code == 404
        assert httpx.delete(f"{server.root}/v1/subscriptions").status_code == 405
    assert (tmp_path / "connector.sqlite3").exists()


def test_two_webhook_secrets_are_taken_during_a_rotation() -> None:
    both = "whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB, whsec_QkJCQkJCQkJCQkJCQkJCQkJCQkJC"
    settings = load_settings({**BASE, "CONNECTOR_WEBHOOK_SECRET": both})
    assert settings.webhook_secret == both
