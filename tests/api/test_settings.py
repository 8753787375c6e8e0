from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from bookingcache.settings import Settings, admin_token_of, ensure_admin_token


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
        Settings()
    monkeypatch.setenv("BOOKINGCACHE_ENVIRONMENT", "development")
    settings = Settings()
    assert settings.port == 9123
    assert settings.log_level == "DEBUG"
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve()}/bookingcache.db"
    assert settings.resolved_public_base_url == "http://127.0.0.1:9123"


def test_admin_token_is_generated_once_and_kept(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = ensure_admin_token(settings)
    token = admin_token_of(first)
    assert len(token) >= 40
    token_file = tmp_path / "data" / "admin-token"
    assert token_file.read_text().strip() == token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
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
    assert Settings().cors_origins == ["https://map.example", "https://edit.example"]
    monkeypatch.setenv("BOOKINGCACHE_CORS_ORIGINS", "map.example")
    with pytest.raises(ValidationError, match="CORS origin"):
        Settings()
    monkeypatch.delenv("BOOKINGCACHE_CORS_ORIGINS")
    assert Settings().cors_origins == []
