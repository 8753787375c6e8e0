"""Every setting of the service, as plain models: ``Settings`` with the sync engine's
(``SyncSettings``, ``GraphSettings``) and the subscription orchestration's
(``OrchestrationSettings``) nested in it.

Tests and tools build them directly. Only the composition root reads them from the environment
(``bootstrap.settings_from_environment``: ``BOOKINGCACHE_*``, ``BOOKINGCACHE_SYNC_*``,
``BOOKINGCACHE_ORCHESTRATION_*``); nothing here reads the environment or touches the disk. The
admin token and secrets key files in the data directory are read or written by
``ensure_admin_token`` and ``ensure_secrets_key``, which the composition root calls.

It is longer than the other modules on purpose: every setting, its default, its bounds and its
meaning are in one place, beside the environment variables that set them (listed in
``docs/operations.md``).
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from bookingcache.errors import InvalidInput

ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 (a file name, not a secret)
SECRETS_KEY_FILE = "secrets-key"
DATABASE_FILE = "bookingcache.db"
MIN_SECRET_LENGTH = 16

# Values people paste from examples. Refused outside development, where a leaked default would
# hand out full management access.
_PLACEHOLDER_SECRETS = frozenset(
    {
        "changeme",
        "change-me",
        "change_me",
        "changethis",
        "change-this",
        "secret",
        "password",
        "admin",
        "token",
        "test",
        "example",
        "default",
        "xxx",
    }
)


def is_placeholder_secret(value: str) -> bool:
    folded = value.strip().casefold()
    return not folded or folded in _PLACEHOLDER_SECRETS or folded.startswith("changeme")


class GraphSettings(BaseModel):
    """The service's own Graph app, shared by every ``graph`` tenant whose access (set through
    the admin API) names no app of its own, and how the ``graph`` source talks to Graph."""

    client_id: str = ""
    client_secret: SecretStr = SecretStr("")
    authority_host: str = "https://login.microsoftonline.com"
    graph_base_url: str = "https://graph.microsoft.com/v1.0"
    scope: str = "https://graph.microsoft.com/.default"
    # A CA bundle to trust for the authority and Graph (a private emulator, a TLS-inspecting proxy).
    ca_bundle: str | None = None
    permission: Literal["read", "read_basic"] = "read"
    request_timeout_s: float = 10.0
    max_concurrent_per_mailbox: int = Field(default=4, ge=1, le=4)
    page_size: int = Field(default=500, ge=1, le=1000)


class SyncSettings(BaseModel):
    """The sync engine's knobs: ``BOOKINGCACHE_SYNC_*`` in the environment (nested with ``__``,
    e.g. ``BOOKINGCACHE_SYNC_GRAPH__CLIENT_ID``)."""

    # A notification makes its calendar's refresh due ``coalesce_ms`` later (the notifications
    # of one Exchange write arrive together); notifications that keep arriving less than
    # ``coalesce_ms`` apart hold it back, for at most ``coalesce_window_ms`` after the first.
    coalesce_ms: int = Field(default=25, ge=0, le=60_000)
    coalesce_window_ms: int = Field(default=300, ge=0, le=60_000)
    window_days: int = Field(default=14, ge=1, le=62)
    # How far before the start of the room's local today the window begins.
    window_past_days: int = Field(default=0, ge=0, le=30)
    # Graph's limits are per app and mailbox (4 concurrent, 10,000 per 10 min) and a refresh
    # keeps one request of its calendar in flight; these caps bound this process's share of
    # the app's global budget and its own load (docs/sync.md, "Concurrency").
    max_refreshes_per_tenant: int = Field(default=64, ge=1)
    max_refreshes_total: int = Field(default=128, ge=1)
    claim_batch: int = Field(default=32, ge=1, le=1000)
    # After a claim that found less than a full batch, the worker waits at least this long
    # before the next: jobs falling due (or released) within it are claimed together.
    claim_gap_ms: int = Field(default=10, ge=0, le=1000)
    poll_interval_ms: int = Field(default=100, ge=10)
    lease_s: float = Field(default=60.0, gt=0)
    max_tries: int = Field(default=8, ge=1)
    backoff_base_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)
    # The reconciliation sweep reads a calendar once its last success is ``sweep_bound_s``
    # old, or ``sweep_healthy_bound_s`` (capped by the tenant's staleness bound less
    # ``sweep_bound_s``) while its subscription is listening (docs/sync.md, "The
    # reconciliation sweep").
    sweep_bound_s: float = Field(default=900.0, gt=0)
    sweep_healthy_bound_s: float = Field(default=4 * 3600.0, gt=0)
    sweep_interval_s: float = Field(default=30.0, gt=0)
    sweep_rate_per_s: float = Field(default=5.0, gt=0)
    # How long the inbox keeps what intake accepted (the record; the work is in the jobs).
    inbox_retention_days: float = Field(default=7.0, gt=0, le=3650)
    # How long the change feed keeps its rows: a change-stream client that reconnects with an
    # older event id gets a ``reset`` (docs/api.md, "Event ids").
    change_feed_retention_hours: float = Field(default=24.0, gt=0, le=87_600)
    connector_timeout_s: float = Field(default=10.0, gt=0)
    graph: GraphSettings = Field(default_factory=GraphSettings)


class OrchestrationSettings(BaseModel):
    """The subscription orchestration's knobs: ``BOOKINGCACHE_ORCHESTRATION_*`` in the
    environment."""

    enabled: bool = True
    # A burst of room changes (an import, an editor session) gives one converge this long after
    # the last change.
    debounce_s: float = Field(default=2.0, ge=0)
    # How often the timer looks for work (lifecycle marks, backoffs, silent calendars, due
    # tenants). Lifecycle events are acted on within one tick.
    tick_s: float = Field(default=2.0, gt=0)
    # Every tenant is re-converged this often whatever happens (the connector renews what
    # expires within 48 hours; Graph's maximum lifetime is just under 7 days).
    reconverge_every_s: float = Field(default=6 * 3600.0, gt=0)
    # ... and as soon as a subscription expires within this.
    renew_within_s: float = Field(default=48 * 3600.0, gt=0)
    # A calendar whose subscription expires within this is reported ``expiring``.
    expiring_within_s: float = Field(default=24 * 3600.0, gt=0)
    # Backoff of a mailbox (or a whole connector) that failed: base * 2^n, capped.
    backoff_base_s: float = Field(default=30.0, gt=0)
    backoff_max_s: float = Field(default=1800.0, gt=0)
    # Lifecycle marks, subscriptions expiring soon and notifications from unknown
    # subscriptions converge a tenant at most this often (the connector may leave a mark
    # standing, say for a mailbox it cannot subscribe).
    react_min_interval_s: float = Field(default=30.0, ge=0)
    connector_timeout_s: float = Field(default=60.0, gt=0)
    # clientState rotation: the previous secret keeps verifying this long.
    client_state_grace_s: float = Field(default=4 * 3600.0, ge=0)
    # Sweep refreshes that found changes no notification announced, in a row, before a
    # calendar is reported ``silent``; a silent calendar is re-read this often.
    silent_after: int = Field(default=2, ge=1)
    silent_resync_s: float = Field(default=60.0, gt=0)


class Settings(BaseModel):
    """Everything a service process needs to know about its surroundings."""

    environment: Literal["development", "staging", "production"] = "production"
    data_dir: Path = Path("data")
    database_url: str | None = Field(
        default=None, description="sqlite:///path or postgresql://...; default: SQLite in data_dir"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="`bookingcache worker` serves /healthz, /readyz and /metrics on this port "
        "(at ``host``); unset, a worker serves no HTTP. `serve` ignores it: its own port "
        "serves them",
    )
    public_base_url: str | None = Field(
        default=None, description="URL the service is reached at; default http://host:port"
    )
    admin_token: SecretStr | None = None
    secrets_key: SecretStr | None = Field(
        default=None,
        description="the keys that seal the tenants' stored secrets (Fernet keys, "
        "comma-separated, newest first: the first seals, every one opens); required outside "
        "development, where a key is generated into the data directory",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="browser origins allowed to call the API (comma-separated), e.g. the map's",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_json: bool = False
    default_staleness_s: int = Field(default=3600, gt=0)
    run_worker: bool = Field(
        default=False,
        description="run the sync worker and sweep in this process (`serve` turns it on "
        "unless --no-worker); the sync engine's knobs are ``sync``",
    )
    database_wait_s: float = Field(
        default=30.0, ge=0, description="how long start-up waits for the database"
    )
    instance_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=120,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="this process's stable identity in the cluster (e.g. the pod or unit name): "
        "a restarted process takes back at once the job claims and cluster duties its previous "
        "incarnation held. Unique among the running processes; unset, host:pid (no take-back "
        "at start; peers release the claims after peer_dead_after_s)",
    )
    duty_lease_s: float = Field(
        default=15.0,
        gt=0,
        description="how long a cluster duty's lease lasts (docs/operations.md, \"Cluster "
        "duties\"); another process takes a dead holder's duty over as the lease of its last "
        "renewal runs out",
    )
    duty_renew_s: float = Field(
        default=5.0, gt=0, description="how often a holder renews its duty leases"
    )
    heartbeat_s: float = Field(
        default=1.0, gt=0, description="how often a process writes its heartbeat"
    )
    peer_dead_after_s: float = Field(
        default=5.0,
        gt=0,
        description="a process whose heartbeat stopped this long is dead: its job claims and "
        "duty leases are released at once",
    )
    change_feed_poll_ms: int = Field(
        default=100,
        ge=10,
        le=60_000,
        description="how often, at most, the availability read model reads the change feed "
        "for other processes' writes (a worker in its own process); this process's own "
        "writes reach it at once",
    )
    read_token_refresh_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="read tokens are checked in memory against every tenant's token hash, "
        "read again at least this often: a read token replaced or a tenant deleted by another "
        "process stops working within this (this process's own changes count at once)",
    )
    auth_failures_per_minute: float = Field(
        default=20.0,
        gt=0,
        description="failed authentications (wrong bearer tokens, bad relay signatures) one "
        "client address may make a minute, after a burst of auth_failure_burst; more are "
        "answered 429 with Retry-After. A valid credential is never refused",
    )
    auth_failure_burst: int = Field(default=20, ge=1)
    tenant_auth_failures_per_minute: float = Field(
        default=100.0,
        gt=0,
        description="failed authentications with tokens naming one tenant a minute, from any "
        "address, after a burst of tenant_auth_failure_burst",
    )
    tenant_auth_failure_burst: int = Field(default=100, ge=1)
    auth_throttle_max_tracked: int = Field(
        default=10_000,
        ge=1,
        description="addresses (and, apart, tenants) whose failures are tracked; the one that "
        "failed least recently is forgotten first",
    )
    trusted_proxy_hops: int = Field(
        default=0,
        ge=0,
        le=10,
        description="reverse proxies in front of the service that append to X-Forwarded-For; "
        "0 (the default) ignores the header and takes the socket peer as the client address",
    )
    fsync: bool = Field(
        default=False,
        description="on SQLite, flush every database commit to disk before it counts as "
        "stored (synchronous=FULL). Then what was answered 202 survives a power cut or an "
        "operating-system crash, not only the service being killed; it costs a disk flush per "
        "commit (intake's group commit shares one among the requests of a round). "
        "PostgreSQL's own settings (synchronous_commit) decide there",
    )
    database_pool_size: int = Field(
        default=10,
        ge=1,
        le=100,
        description="connections of this process's main pool to the database; it may grow by "
        "as many again under load. On PostgreSQL a process holds at most twice this plus 5 "
        "connections (docs/operations.md, Connection budget): lower it to fit more processes "
        "within the server's max_connections",
    )
    database_idle_transaction_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="on PostgreSQL, end a session of this process that sits idle inside a "
        "transaction for longer (idle_in_transaction_session_timeout). The service's "
        "transactions never wait on anything but the database, so only a process that is "
        "stopped or starved mid-transaction is idle in one; ending its session frees the rows "
        "it locked, which would otherwise hold up intake and the cluster's duty takeovers",
    )
    http_max_target_bytes: int = Field(
        default=8 * 1024,
        ge=256,
        le=1024 * 1024,
        description="longest request target (path and query) the server reads; longer: 414",
    )
    http_max_head_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=4 * 1024 * 1024,
        description="largest request head (request line and header fields); larger: 431",
    )
    http_max_headers: int = Field(
        default=100, ge=1, le=10_000, description="most header fields in a request; more: 431"
    )
    http_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="a request head must be complete this long after the connection opened "
        "(or, on a kept-alive connection, after its first byte); else 408 and the connection "
        "closes",
    )
    http_body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="a request body that sends nothing for this long while it is read: 408 "
        "and the connection closes",
    )
    http_keep_alive_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="an idle kept-alive connection closes after this long; behind a proxy "
        "that keeps connections open longer, set it above the proxy's idle timeout",
    )
    stream_heartbeat_s: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="a change-stream client that has been sent nothing for this long is sent a "
        "comment line, so that proxies keep its connection open",
    )
    stream_queue_events: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="room events queued for one change-stream client that reads too slowly; "
        "past this, its queue is dropped and it is sent a reset with every room's state",
    )
    stream_ticket_ttl_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="how long a stream ticket may be used to open a change stream (a stream "
        "opened with it stays open)",
    )

    sync: SyncSettings = Field(default_factory=SyncSettings)
    orchestration: OrchestrationSettings = Field(default_factory=OrchestrationSettings)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip().rstrip("/") for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"CORS origin {origin!r} must be * or start with http(s)://")
        return value

    @field_validator("public_base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("public_base_url must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_http_limits(self) -> Settings:
        if self.http_max_target_bytes >= self.http_max_head_bytes:
            raise ValueError("http_max_target_bytes must be less than http_max_head_bytes")
        return self

    @model_validator(mode="after")
    def _check_duty_timing(self) -> Settings:
        if self.duty_renew_s >= self.duty_lease_s:
            raise ValueError("duty_renew_s must be less than duty_lease_s")
        if self.heartbeat_s >= self.peer_dead_after_s:
            raise ValueError("heartbeat_s must be less than peer_dead_after_s")
        return self

    @model_validator(mode="after")
    def _refuse_insecure_admin_token(self) -> Settings:
        if self.admin_token is None or self.environment == "development":
            return self
        token = self.admin_token.get_secret_value()
        if is_placeholder_secret(token):
            raise ValueError(
                "BOOKINGCACHE_ADMIN_TOKEN is a placeholder; set a real secret, unset it to have "
                "one generated, or set BOOKINGCACHE_ENVIRONMENT=development"
            )
        if len(token) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"BOOKINGCACHE_ADMIN_TOKEN must be at least {MIN_SECRET_LENGTH} characters"
            )
        return self

    @field_validator("secrets_key")
    @classmethod
    def _check_secrets_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        parse_secrets_keys(value.get_secret_value())
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / DATABASE_FILE).resolve()}"

    @property
    def resolved_public_base_url(self) -> str:
        if self.public_base_url:
            return self.public_base_url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


AdminTokenOrigin = Literal["configured", "stored", "generated"]


def ensure_admin_token(settings: Settings) -> Settings:
    """Settings with an admin token: the configured one, else the one stored in the data
    directory, else a new one generated and stored there (readable by the owner only)."""
    return admin_token_with_origin(settings)[0]


def admin_token_with_origin(settings: Settings) -> tuple[Settings, AdminTokenOrigin]:
    """``ensure_admin_token``, and where the token came from: ``configured`` (the settings,
    so the environment), ``stored`` (the data directory's file) or ``generated`` (just now, by
    this call, which alone may show it)."""
    if settings.admin_token is not None:
        return settings, "configured"
    token, origin = _stored_or_generated(
        settings.data_dir, ADMIN_TOKEN_FILE, lambda: secrets.token_urlsafe(32)
    )
    return settings.model_copy(update={"admin_token": SecretStr(token)}), origin


def stored_admin_token(settings: Settings) -> str | None:
    """The admin token a running service uses, as another process finds it: the configured
    one, else the data directory's file; None when there is neither (nothing is made)."""
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value()
    return _read_token_file(settings.data_dir / ADMIN_TOKEN_FILE)


def _stored_or_generated(
    data_dir: Path, name: str, generate: Callable[[], str]
) -> tuple[str, AdminTokenOrigin]:
    """The secret in the data directory's file ``name``, or a new one written there (readable
    by the owner only), with where it came from."""
    path = data_dir / name
    value = _read_token_file(path)
    if value is not None:
        return value, "stored"
    value = generate()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # O_EXCL: two processes starting together must not each write a different secret.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        stored = _read_token_file(path)
        if stored is None:
            raise InvalidInput(f"{path} exists but holds nothing") from None
        return stored, "stored"
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(value + "\n")
    return value, "generated"


def new_secrets_key() -> str:
    """A new key for ``BOOKINGCACHE_SECRETS_KEY`` (Fernet's format: 32 random bytes, URL-safe
    base64)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")


def parse_secrets_keys(value: str) -> list[str]:
    """The keys of a ``BOOKINGCACHE_SECRETS_KEY`` value, newest first; ``ValueError`` naming
    the position of a key that is not 32 bytes of URL-safe base64 (never the key itself)."""
    keys = [key.strip() for key in value.split(",") if key.strip()]
    if not keys:
        raise ValueError("BOOKINGCACHE_SECRETS_KEY holds no key")
    for position, key in enumerate(keys, start=1):
        try:
            raw = base64.urlsafe_b64decode(key.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError):
            raw = b""
        if len(raw) != 32:
            raise ValueError(
                f"key {position} of BOOKINGCACHE_SECRETS_KEY is not a key: each is 32 bytes "
                "of URL-safe base64 (`bookingcache admin new-key` makes one)"
            )
    return keys


def ensure_secrets_key(settings: Settings) -> Settings:
    """Settings with the keys that seal stored secrets: the configured ones; in development
    only, else the one stored in the data directory or a new one generated there. Elsewhere a
    missing key refuses to start (``InvalidInput``): a key made up on one host would lock
    every other process out of the secrets, and losing it loses them."""
    if settings.secrets_key is not None:
        return settings
    if settings.environment != "development":
        raise InvalidInput(
            f"BOOKINGCACHE_SECRETS_KEY is not set: {settings.environment} needs the key that "
            "seals the tenants' stored secrets, the same in every process (make one with "
            "`bookingcache admin new-key` and keep it as safe as the database's backups)"
        )
    key, _ = _stored_or_generated(settings.data_dir, SECRETS_KEY_FILE, new_secrets_key)
    return settings.model_copy(update={"secrets_key": SecretStr(key)})


def secrets_keys_of(settings: Settings) -> list[str]:
    if settings.secrets_key is None:
        raise InvalidInput("no secrets key configured; call ensure_secrets_key first")
    return parse_secrets_keys(settings.secrets_key.get_secret_value())


def _read_token_file(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def admin_token_of(settings: Settings) -> str:
    if settings.admin_token is None:
        raise InvalidInput("no admin token configured; call ensure_admin_token first")
    return settings.admin_token.get_secret_value()
