"""Service settings, read from ``BOOKINGCACHE_*`` environment variables (or given directly).

Nothing here touches the disk: the admin token file in the data directory is read or written by
``ensure_admin_token``, which the composition root and the ``serve`` command call.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bookingcache.errors import InvalidInput

ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 (a file name, not a secret)
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


class Settings(BaseSettings):
    """Everything the service process needs to know about its surroundings."""

    model_config = SettingsConfigDict(env_prefix="BOOKINGCACHE_", extra="ignore")

    environment: Literal["development", "staging", "production"] = "production"
    data_dir: Path = Path("data")
    database_url: str | None = Field(
        default=None, description="sqlite:///path or postgresql://...; default: SQLite in data_dir"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_base_url: str | None = Field(
        default=None, description="URL the service is reached at; default http://host:port"
    )
    admin_token: SecretStr | None = None
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
        "unless --no-worker); sync knobs are BOOKINGCACHE_SYNC_* (bookingcache.sync.settings)",
    )
    database_wait_s: float = Field(
        default=30.0, ge=0, description="how long start-up waits for the database"
    )
    change_feed_poll_ms: int = Field(
        default=100,
        ge=10,
        le=60_000,
        description="how often, at most, the availability read model reads the change feed "
        "for other processes' writes (a worker in its own process); this process's own "
        "writes reach it at once",
    )
    fsync: bool = Field(
        default=False,
        description="on SQLite, flush every database commit to disk before it counts as "
        "stored (synchronous=FULL). Then what was answered 202 survives a power cut or an "
        "operating-system crash, not only the service being killed; it costs a disk flush per "
        "commit (intake's group commit shares one among the requests of a round). "
        "PostgreSQL's own settings (synchronous_commit) decide there",
    )

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


def ensure_admin_token(settings: Settings) -> Settings:
    """Settings with an admin token: the configured one, else the one stored in the data
    directory, else a new one generated and stored there (readable by the owner only)."""
    if settings.admin_token is not None:
        return settings
    path = settings.data_dir / ADMIN_TOKEN_FILE
    token = _read_token_file(path)
    if token is None:
        token = secrets.token_urlsafe(32)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting together must not each write a different token.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            stored = _read_token_file(path)
            if stored is None:
                raise InvalidInput(f"{path} exists but holds no token") from None
            token = stored
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(token + "\n")
    return settings.model_copy(update={"admin_token": SecretStr(token)})


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
