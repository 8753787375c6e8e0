"""Settings, read once from the environment (``CONNECTOR_*``) into one object.

Azure Functions exposes app settings (including resolved Key Vault references) as environment
variables, so the same reader serves all three ways of running the connector.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .events import TitlePolicy

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
DEFAULT_GRAPH_URL = "https://graph.microsoft.com/v1.0"


@dataclass(frozen=True)
class Settings:
    tenant_id: str
    client_id: str
    client_secret: str | None = None
    client_cert_path: Path | None = None
    authority_host: str = DEFAULT_AUTHORITY
    graph_url: str = DEFAULT_GRAPH_URL
    ca_bundle: Path | None = None
    webhook_secret: str | None = None
    service_url: str | None = None
    service_tenant: str | None = None
    client_states: tuple[str, ...] = ()
    push_events: bool = False
    # What leaves the tenant of an event's subject, whatever the service asks.
    title_policy: TitlePolicy = TitlePolicy.SEND
    window_days: int = 14
    state_dir: Path = Path(".bookingcache-connector")
    signature_tolerance_s: int = 300
    relay_resync_after_s: float = 300.0
    relay_max_backoff_s: float = 60.0
    # With pushed events: push each subscribed calendar's window at least this often (0: never
    # unasked), at most this many a second.
    push_reconcile_s: float = 900.0
    push_reconcile_rate_per_s: float = 5.0
    push_reconcile_healthy_s: float = 4 * 3600.0
    expiration_minutes: int = 10_070
    renew_below_hours: int = 48
    renew_every_s: float = 6 * 3600.0
    per_mailbox_concurrency: int = 4
    graph_max_retries: int = 5
    http_timeout_s: float = 30.0
    # The HTTP server of ``bookingcache-connector serve`` (server.py).
    http_max_request_line_bytes: int = 8 * 1024
    http_max_head_bytes: int = 64 * 1024
    http_max_headers: int = 100
    http_header_timeout_s: float = 10.0
    http_body_timeout_s: float = 30.0
    http_keep_alive_s: float = 5.0

    @property
    def authority(self) -> str:
        return f"{self.authority_host.rstrip('/')}/{self.tenant_id}"

    @property
    def is_microsoft_authority(self) -> bool:
        host = self.authority_host.split("://", 1)[-1].split("/", 1)[0].lower()
        return host.endswith(("microsoftonline.com", "microsoftonline.us", "chinacloudapi.cn"))

    def msal_credential(self) -> str | dict[str, Any]:
        """The ``client_credential`` MSAL wants: the secret, or a certificate dict."""
        if self.client_cert_path is not None:
            return certificate_credential(self.client_cert_path)
        if self.client_secret:
            return self.client_secret
        raise ConfigError("set CONNECTOR_CLIENT_SECRET or CONNECTOR_CLIENT_CERT_PATH")

    def ssl_context(self) -> ssl.SSLContext:
        if self.ca_bundle is not None:
            return ssl.create_default_context(cafile=str(self.ca_bundle))
        return ssl.create_default_context()

    def require_service(self) -> tuple[str, str, str]:
        if not (self.service_url and self.service_tenant and self.webhook_secret):
            raise ConfigError(
                "relaying needs CONNECTOR_SERVICE_URL, CONNECTOR_SERVICE_TENANT and "
                "CONNECTOR_WEBHOOK_SECRET"
            )
        return self.service_url.rstrip("/"), self.service_tenant, self.webhook_secret


def certificate_credential(pem_path: Path) -> dict[str, Any]:
    """A PEM file holding the private key and its certificate -> MSAL's certificate dict.

    The thumbprint is the SHA-1 of the certificate's DER form, as Entra shows it."""
    try:
        pem = pem_path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read certificate file {pem_path}: {exc}") from exc
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    if begin not in pem or "PRIVATE KEY-----" not in pem:
        raise ConfigError(f"{pem_path} must hold both the private key and the certificate (PEM)")
    cert_block = begin + pem.split(begin, 1)[1].split(end, 1)[0] + end
    thumbprint = hashlib.sha1(ssl.PEM_cert_to_DER_cert(cert_block), usedforsecurity=False)
    return {"private_key": pem, "thumbprint": thumbprint.hexdigest().upper()}


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"not a boolean: {value!r}")


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = _number(env, name, default)
    if value <= 0:
        raise ConfigError(f"{name} must be more than 0, got {value:g}")
    return value


def _whole(env: Mapping[str, str], name: str, default: int) -> int:
    value = _positive(env, name, default)
    if value != int(value):
        raise ConfigError(f"{name} must be a whole number, got {value:g}")
    return int(value)


def load_settings(env: Mapping[str, str]) -> Settings:
    """Read ``CONNECTOR_*`` settings; pass ``os.environ`` (or a dict in tests)."""

    def get(name: str) -> str | None:
        value = env.get(f"CONNECTOR_{name}")
        return value.strip() if value and value.strip() else None

    tenant_id, client_id = get("TENANT_ID"), get("CLIENT_ID")
    if not tenant_id or not client_id:
        raise ConfigError("CONNECTOR_TENANT_ID and CONNECTOR_CLIENT_ID are required")
    secret = get("CLIENT_SECRET")
    cert = get("CLIENT_CERT_PATH")
    if not secret and not cert:
        raise ConfigError("set CONNECTOR_CLIENT_SECRET or CONNECTOR_CLIENT_CERT_PATH")
    webhook_secret = get("WEBHOOK_SECRET")
    if webhook_secret is not None and not all(
        part.strip().startswith("whsec_") for part in webhook_secret.split(",")
    ):
        raise ConfigError(
            "CONNECTOR_WEBHOOK_SECRET must be the tenant's whsec_... secret (or, while the "
            "service rotates it, the new and the old one, comma-separated)"
        )
    push_reconcile_s = _number(env, "CONNECTOR_PUSH_RECONCILE_S", 900.0)
    push_reconcile_rate = _number(env, "CONNECTOR_PUSH_RECONCILE_RATE", 5.0)
    if push_reconcile_s < 0:
        raise ConfigError("CONNECTOR_PUSH_RECONCILE_S must be 0 (off) or more")
    if push_reconcile_rate <= 0:
        raise ConfigError("CONNECTOR_PUSH_RECONCILE_RATE must be more than 0")
    push_reconcile_healthy_s = _number(env, "CONNECTOR_PUSH_RECONCILE_HEALTHY_S", 4 * 3600.0)
    if push_reconcile_healthy_s < 0:
        raise ConfigError("CONNECTOR_PUSH_RECONCILE_HEALTHY_S must be 0 or more")
    ca = get("CA_BUNDLE")
    states = tuple(s for s in (get("CLIENT_STATES") or "").split(",") if s.strip())
    return Settings(
        tenant_id=tenant_id,
        client_id=client_id,
        client_secret=secret,
        client_cert_path=Path(cert) if cert else None,
        authority_host=get("AUTHORITY") or DEFAULT_AUTHORITY,
        graph_url=(get("GRAPH_URL") or DEFAULT_GRAPH_URL).rstrip("/"),
        ca_bundle=Path(ca) if ca else None,
        webhook_secret=webhook_secret,
        service_url=get("SERVICE_URL"),
        service_tenant=get("SERVICE_TENANT"),
        client_states=tuple(s.strip() for s in states),
        push_events=_flag(get("PUSH_EVENTS"), False),
        title_policy=_title_policy(get("TITLE_POLICY")),
        window_days=int(_number(env, "CONNECTOR_WINDOW_DAYS", 14)),
        state_dir=Path(get("STATE_DIR") or ".bookingcache-connector"),
        signature_tolerance_s=int(_number(env, "CONNECTOR_SIGNATURE_TOLERANCE_S", 300)),
        relay_resync_after_s=_number(env, "CONNECTOR_RELAY_RESYNC_AFTER_S", 300.0),
        relay_max_backoff_s=_number(env, "CONNECTOR_RELAY_MAX_BACKOFF_S", 60.0),
        push_reconcile_s=push_reconcile_s,
        push_reconcile_rate_per_s=push_reconcile_rate,
        push_reconcile_healthy_s=push_reconcile_healthy_s,
        expiration_minutes=int(_number(env, "CONNECTOR_EXPIRATION_MINUTES", 10_070)),
        renew_below_hours=int(_number(env, "CONNECTOR_RENEW_BELOW_HOURS", 48)),
        renew_every_s=_number(env, "CONNECTOR_RENEW_EVERY_S", 6 * 3600.0),
        http_timeout_s=_number(env, "CONNECTOR_HTTP_TIMEOUT_S", 30.0),
        **_server_limits(env),
    )


def _title_policy(value: str | None) -> TitlePolicy:
    if value is None:
        return TitlePolicy.SEND
    try:
        return TitlePolicy(value.lower())
    except ValueError:
        allowed = ", ".join(policy.value for policy in TitlePolicy)
        raise ConfigError(
            f"CONNECTOR_TITLE_POLICY must be one of {allowed}, got {value!r}"
        ) from None


def _server_limits(env: Mapping[str, str]) -> dict[str, Any]:
    line = _whole(env, "CONNECTOR_HTTP_MAX_REQUEST_LINE_BYTES", 8 * 1024)
    head = _whole(env, "CONNECTOR_HTTP_MAX_HEAD_BYTES", 64 * 1024)
    if line >= head:
        raise ConfigError(
            "CONNECTOR_HTTP_MAX_REQUEST_LINE_BYTES must be less than CONNECTOR_HTTP_MAX_HEAD_BYTES"
        )
    return {
        "http_max_request_line_bytes": line,
        "http_max_head_bytes": head,
        "http_max_headers": _whole(env, "CONNECTOR_HTTP_MAX_HEADERS", 100),
        "http_header_timeout_s": _positive(env, "CONNECTOR_HTTP_HEADER_TIMEOUT_S", 10.0),
        "http_body_timeout_s": _positive(env, "CONNECTOR_HTTP_BODY_TIMEOUT_S", 30.0),
        "http_keep_alive_s": _positive(env, "CONNECTOR_HTTP_KEEP_ALIVE_S", 5.0),
    }
