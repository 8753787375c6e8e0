from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from bookingcache.bootstrap import (
    check_outbound_settings,
    open_store_when_ready,
    service_app,
    settings_from_environment,
)
from bookingcache.cli import main
from bookingcache.clock import SystemClock
from bookingcache.errors import InvalidInput
from bookingcache.settings import (
    SECRETS_KEY_FILE,
    GraphSettings,
    Settings,
    SyncSettings,
    admin_token_of,
    ensure_admin_token,
    ensure_secrets_key,
    new_secrets_key,
    secrets_keys_of,
)
from tests.support.databases import SECRETS_KEY


@pytest.mark.parametrize("token", ["changeme", "CHANGEME", "changethis", "secret", "changeme123"])
def test_placeholder_admin_token_is_refused_outside_development(token: str) -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(admin_token=SecretStr(token))


def test_short_admin_token_is_refused_outside_development() -> None:
    with pytest.raises(ValidationError, match="at least 16"):
        Settings(admin_token=SecretStr("abc123xyz"))


def test_placeholder_admin_token_is_allowed_in_development() -> None:
    settings = Settings(admin_token=SecretStr("changeme"), environment="development")
    assert admin_token_of(settings) == "changeme"


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BOOKINGCACHE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BOOKINGCACHE_PORT", "9123")
    monkeypatch.setenv("BOOKINGCACHE_LOG_LEVEL", "debug")
    monkeypatch.setenv("BOOKINGCACHE_ADMIN_TOKEN", "changeme")
    with pytest.raises(ValidationError):
        settings_from_environment()
    monkeypatch.setenv("BOOKINGCACHE_ENVIRONMENT", "development")
    settings = settings_from_environment()
    assert settings.port == 9123
    assert settings.log_level == "DEBUG"
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve()}/bookingcache.db"
    assert settings.resolved_public_base_url == "http://127.0.0.1:9123"
    assert settings.database_pool_size == 10
    monkeypatch.setenv("BOOKINGCACHE_DATABASE_POOL_SIZE", "4")
    assert settings_from_environment().database_pool_size == 4
    monkeypatch.setenv("BOOKINGCACHE_DATABASE_POOL_SIZE", "0")
    with pytest.raises(ValidationError):
        settings_from_environment()


def test_admin_token_is_generated_once_and_kept(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = ensure_admin_token(settings)
    token = admin_token_of(first)
    assert len(token) >= 40
    token_file = tmp_path / "data" / "admin-token"
    assert token_file.read_text().strip() == token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    again = ensure_admin_token(Settings(data_dir=tmp_path / "data"))
    assert admin_token_of(again) == token


def test_configured_admin_token_wins_over_the_file(tmp_path: Path) -> None:
    configured = "a-configured-admin-token-0123456789"
    settings = ensure_admin_token(Settings(data_dir=tmp_path, admin_token=SecretStr(configured)))
    assert admin_token_of(settings) == configured
    assert not (tmp_path / "admin-token").exists()


def test_public_base_url_must_be_http() -> None:
    with pytest.raises(ValidationError):
        Settings(public_base_url="ftp://example.com")
    assert Settings(public_base_url="https://x.example/").public_base_url == "https://x.example"


def test_cors_origins_from_a_comma_separated_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOOKINGCACHE_CORS_ORIGINS", "https://map.example, https://edit.example/")
    assert settings_from_environment().cors_origins == [
        "https://map.example",
        "https://edit.example",
    ]
    monkeypatch.setenv("BOOKINGCACHE_CORS_ORIGINS", "map.example")
    with pytest.raises(ValidationError, match="CORS origin"):
        settings_from_environment()
    monkeypatch.delenv("BOOKINGCACHE_CORS_ORIGINS")
    assert settings_from_environment().cors_origins == []


def test_the_sync_and_orchestration_settings_read_their_own_prefixes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BOOKINGCACHE_SYNC_COALESCE_MS", "75")
    monkeypatch.setenv("BOOKINGCACHE_SYNC_GRAPH__CLIENT_ID", "app-1")
    monkeypatch.setenv("BOOKINGCACHE_ORCHESTRATION_DEBOUNCE_S", "0.5")
    settings = settings_from_environment(port=0)
    assert settings.port == 0  # what the command line gives wins
    assert settings.sync.coalesce_ms == 75
    assert settings.sync.graph.client_id == "app-1"
    assert settings.orchestration.debounce_s == 0.5


@pytest.mark.parametrize(
    ("variable", "field"),
    [
        ("BOOKINGCACHE_SYNC_GRAPH__TENANTS", "`graph`"),
        ("BOOKINGCACHE_ORCHESTRATION_NOTIFICATION_MODES", "`notification_mode`"),
    ],
)
def test_a_removed_environment_json_refuses_and_says_how_to_move(
    monkeypatch: pytest.MonkeyPatch, variable: str, field: str
) -> None:
    monkeypatch.setenv(variable, '{"contoso": "relay"}')
    with pytest.raises(InvalidInput) as refused:
        settings_from_environment()
    message = str(refused.value)
    assert variable in message
    assert field in message
    assert "PATCH /v1/tenants/{tenant}" in message
    assert "Moving from the environment JSON" in message
    assert "contoso" not in message  # the value is not echoed


@pytest.mark.parametrize("command", ["serve", "worker", "migrate"])
def test_a_process_started_with_a_removed_variable_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    monkeypatch.setenv("BOOKINGCACHE_SYNC_GRAPH__TENANTS", "{}")
    monkeypatch.setenv("BOOKINGCACHE_ENVIRONMENT", "development")
    assert main([command, "--data-dir", str(tmp_path)]) != 0
    error = capsys.readouterr().err
    assert "BOOKINGCACHE_SYNC_GRAPH__TENANTS is no longer read" in error
    assert not (tmp_path / "bookingcache.db").exists()


def test_settings_built_in_code_read_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOOKINGCACHE_PORT", "9123")
    monkeypatch.setenv("BOOKINGCACHE_SYNC_COALESCE_MS", "75")
    settings = Settings()
    assert settings.port == 8080
    assert settings.sync.coalesce_ms == SyncSettings().coalesce_ms != 75


async def test_the_data_directory_is_created_private(tmp_path: Path) -> None:
    settings = Settings(environment="development", data_dir=tmp_path / "new" / "data")
    store = await open_store_when_ready(settings, clock=SystemClock())
    await store.close()
    assert stat.S_IMODE(settings.data_dir.stat().st_mode) == 0o700
    database = settings.data_dir / "bookingcache.db"
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    # Development's generated secrets key is the owner's alone, and kept for the next start.
    key_file = settings.data_dir / SECRETS_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert ensure_secrets_key(settings).secrets_key == SecretStr(key)


def test_start_up_refuses_production_without_a_secrets_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("BOOKINGCACHE_ENVIRONMENT", "BOOKINGCACHE_SECRETS_KEY"):
        monkeypatch.delenv(name, raising=False)
    for command in (["serve", "--port", "0"], ["worker"]):
        assert main([*command, "--data-dir", str(tmp_path)]) == 1
        error = capsys.readouterr().err
        assert "BOOKINGCACHE_SECRETS_KEY is not set: production needs the key" in error
        assert "bookingcache admin new-key" in error
        assert list(tmp_path.iterdir()) == []  # nothing opened, no key made up
    with pytest.raises(InvalidInput, match="BOOKINGCACHE_SECRETS_KEY is not set: staging"):
        ensure_secrets_key(Settings(environment="staging", data_dir=tmp_path))


def test_a_secrets_key_that_is_no_key_is_refused_without_being_shown() -> None:
    good = new_secrets_key()
    for value in ("not-a-key-at-all", f"{good},{good[:-4]}", " , "):
        with pytest.raises(ValidationError) as raised:
            Settings(secrets_key=SecretStr(value))
        assert "BOOKINGCACHE_SECRETS_KEY" in str(raised.value)
        assert value.strip(" ,") == "" or value.strip(" ,") not in str(raised.value)
    keys = Settings(secrets_key=SecretStr(f" {good} , {new_secrets_key()} "))
    assert secrets_keys_of(keys)[0] == good
    assert len(secrets_keys_of(keys)) == 2


@pytest.mark.parametrize(
    "url",
    [
        "http://bookings.example.com",
        "https://127.0.0.1:8080",
        "https://localhost",
        "https://10.1.2.3",
        "https://169.254.169.254",
        "https://ops:secret@bookings.example.com",
    ],
)
def test_start_up_refuses_a_public_base_url_graph_cannot_use_in_production(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    for name in ("BOOKINGCACHE_ENVIRONMENT", "BOOKINGCACHE_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BOOKINGCACHE_PUBLIC_BASE_URL", url)
    assert main(["serve", "--port", "0", "--data-dir", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert "BOOKINGCACHE_PUBLIC_BASE_URL is refused in production" in error
    assert "secret" not in error
    assert not (tmp_path / "bookingcache.db").exists()  # it stopped before opening anything
    monkeypatch.setenv("BOOKINGCACHE_ENVIRONMENT", "development")
    assert settings_from_environment().public_base_url == url.rstrip("/")


async def test_a_service_with_an_http_public_base_url_does_not_start_in_staging(
    tmp_path: Path,
) -> None:
    settings = Settings(
        environment="staging",
        data_dir=tmp_path,
        admin_token=SecretStr("a-real-admin-token-of-some-length"),
        secrets_key=SecretStr(SECRETS_KEY),
        public_base_url="http://bookings.example.com",
    )
    app = service_app(settings)
    with pytest.raises(InvalidInput, match="must use https"):
        async with app.router.lifespan_context(app):
            pass
    https = settings.model_copy(update={"public_base_url": "https://bookings.example.com"})
    app = service_app(https)
    async with app.router.lifespan_context(app):
        assert app.state.services.orchestrator is not None


def test_graph_urls_must_be_https_without_credentials_outside_development() -> None:
    for graph in (
        GraphSettings(graph_base_url="http://graph.example.com/v1.0"),
        GraphSettings(authority_host="https://user:pw@login.example.com"),
    ):
        settings = Settings(sync=SyncSettings(graph=graph))
        with pytest.raises(InvalidInput, match="BOOKINGCACHE_SYNC_GRAPH__"):
            check_outbound_settings(settings)
        check_outbound_settings(settings.model_copy(update={"environment": "development"}))
    # The operator's own endpoint may be a private host (an emulator, a proxy) over https.
    check_outbound_settings(
        Settings(sync=SyncSettings(graph=GraphSettings(graph_base_url="https://10.0.0.5/v1.0")))
    )


def test_the_authentication_settings_read_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = settings_from_environment()
    assert defaults.read_token_refresh_s == 5.0
    assert (defaults.auth_failures_per_minute, defaults.auth_failure_burst) == (20.0, 20)
    assert (defaults.tenant_auth_failures_per_minute, defaults.tenant_auth_failure_burst) == (
        100.0,
        100,
    )
    assert defaults.auth_throttle_max_tracked == 10_000
    assert defaults.trusted_proxy_hops == 0
    monkeypatch.setenv("BOOKINGCACHE_READ_TOKEN_REFRESH_S", "2")
    monkeypatch.setenv("BOOKINGCACHE_AUTH_FAILURES_PER_MINUTE", "6")
    monkeypatch.setenv("BOOKINGCACHE_AUTH_FAILURE_BURST", "3")
    monkeypatch.setenv("BOOKINGCACHE_TENANT_AUTH_FAILURES_PER_MINUTE", "30")
    monkeypatch.setenv("BOOKINGCACHE_TENANT_AUTH_FAILURE_BURST", "10")
    monkeypatch.setenv("BOOKINGCACHE_AUTH_THROTTLE_MAX_TRACKED", "500")
    monkeypatch.setenv("BOOKINGCACHE_TRUSTED_PROXY_HOPS", "1")
    settings = settings_from_environment()
    assert settings.read_token_refresh_s == 2.0
    assert (settings.auth_failures_per_minute, settings.auth_failure_burst) == (6.0, 3)
    assert (settings.tenant_auth_failures_per_minute, settings.tenant_auth_failure_burst) == (
        30.0,
        10,
    )
    assert settings.auth_throttle_max_tracked == 500
    assert settings.trusted_proxy_hops == 1
