from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest

from bookingcache.cli import main
from bookingcache.settings import Settings
from bookingcache.telemetry.logs import configure_logging
from tests.support.servers import serve_in_thread


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "serve" in out
    assert "bench" in out


def test_a_bad_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--port", "eighty"])
    assert exit_info.value.code == 2
    assert "--port" in capsys.readouterr().err


def test_invalid_settings_are_reported_not_raised(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOOKINGCACHE_LOG_LEVEL", "LOUD")
    assert main(["serve", "--port", "0"]) == 2
    assert "log_level" in capsys.readouterr().err


@pytest.mark.usefixtures("restore_logging")
def test_json_logs_are_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings(log_json=True, log_level="INFO"))
    log = logging.getLogger("bookingcache.test")
    log.debug("not shown")
    log.info("refreshed %s", "room.1@contoso.com", extra={"tenant": "contoso", "events": 3})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "INFO"
    assert first["logger"] == "bookingcache.test"
    assert first["message"] == "refreshed room.1@contoso.com"
    assert first["tenant"] == "contoso"
    assert first["events"] == 3
    assert first["time"].endswith("+00:00")
    assert "ValueError: boom" in second["exception"]


async def _ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("log_json", [False, True])
def test_credentials_in_urls_never_reach_the_log(
    capsys: pytest.CaptureFixture[str], log_json: bool
) -> None:
    # A connector URL as an Azure Function gives it (a key in the query), with a user and
    # password too, requested for real: httpx logs every request's URL at INFO.
    configure_logging(Settings(log_json=log_json, log_level="INFO"))
    with serve_in_thread(_ok) as base:
        url = base.replace("http://", "http://operator:pa55-word-0123@") + "/api/relay"
        with httpx.Client() as client:
            assert client.get(url, params={"code": "fn-key-0123456789"}).status_code == 204
    logging.getLogger("bookingcache.test").warning("calling %s failed", url + "?code=again-key")
    lines = capsys.readouterr().err.strip().splitlines()
    text = "\n".join(lines)
    assert "HTTP Request: GET http://***@127.0.0.1:" in text
    assert "/api/relay?code=***" in text
    for secret in ("pa55-word-0123", "operator", "fn-key-0123456789", "again-key"):
        assert secret not in text
    if log_json:
        assert all(json.loads(line)["message"] for line in lines)
