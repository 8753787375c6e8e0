"""``bookingcache admin``'s commands through a running service's admin API (a real loopback
server, on every engine): read tokens, the signing secret, the clientState and the audit log,
with the admin token from the environment or the data directory."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from bookingcache.bootstrap import service_app
from bookingcache.cli import main
from bookingcache.clock import FixedClock
from bookingcache.settings import Settings
from tests.support.api import tenant_body
from tests.support.auth import ADMIN, ADMIN_TOKEN
from tests.support.servers import serve_in_thread


async def _admin(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    # The command runs its own client, as it does from a shell.
    status = await asyncio.to_thread(main, ["admin", *argv])
    out, err = capsys.readouterr()
    return status, out, err


async def test_admin_commands_manage_credentials_through_the_api(
    settings: Settings,
    clock: FixedClock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("BOOKINGCACHE_ADMIN_TOKEN", ADMIN_TOKEN)
    with serve_in_thread(service_app(settings, clock=clock)) as url:
        async with httpx.AsyncClient(base_url=url, headers=ADMIN) as client:
            made = await client.post("/v1/tenants", json=tenant_body("acme-cli"))
            assert made.status_code == 201, made.text
            read_token = made.json()["secrets"]["read_token"]

            status, out, _ = await _admin(
                capsys, "read-tokens", "create", "acme-cli", "kiosk", "--url", url
            )
            assert status == 0
            kiosk: dict[str, Any] = json.loads(out)
            assert kiosk["name"] == "kiosk"
            assert kiosk["token"].startswith("acme-cli.")

            status, out, _ = await _admin(capsys, "read-tokens", "list", "acme-cli", "--url", url)
            assert status == 0
            assert [t["name"] for t in json.loads(out)["read_tokens"]] == ["default", "kiosk"]
            assert kiosk["token"] not in out

            status, out, _ = await _admin(
                capsys, "read-tokens", "revoke", "acme-cli", "default", "--url", url
            )
            assert (status, out) == (0, "")
            status, _, err = await _admin(
                capsys, "read-tokens", "revoke", "acme-cli", "default", "--url", url
            )
            assert status == 1
            assert err.startswith("bookingcache admin: 404 Not Found: ")
            status, _, err = await _admin(
                capsys, "read-tokens", "create", "acme-cli", "Not A Name", "--url", url
            )
            assert status == 1
            assert "body.name" in err

            status, out, _ = await _admin(
                capsys, "signing-secret", "rotate", "acme-cli", "--overlap-s", "600", "--url", url
            )
            assert status == 0
            rotated = json.loads(out)
            assert rotated["signing_secret"].startswith("whsec_")

            status, out, _ = await _admin(
                capsys, "client-state", "rotate", "acme-cli", "--url", url
            )
            assert status == 0, out

            status, out, _ = await _admin(capsys, "audit", "--tenant", "acme-cli", "--url", url)
            assert status == 0
            actions = [entry["action"] for entry in json.loads(out)["entries"]]
            assert actions == [
                "client_state.rotate",
                "signing_secret.rotate",
                "read_token.revoke",
                "read_token.create",
                "tenant.create",
            ]
            assert read_token not in out
            assert rotated["signing_secret"] not in out

        # Without BOOKINGCACHE_ADMIN_TOKEN the data directory's file is read, if there is one.
        monkeypatch.delenv("BOOKINGCACHE_ADMIN_TOKEN")
        empty = tmp_path / "elsewhere"
        status, _, err = await _admin(capsys, "audit", "--url", url, "--data-dir", str(empty))
        assert status == 1
        assert "no admin token" in err
        empty.mkdir()
        (empty / "admin-token").write_text(ADMIN_TOKEN + "\n")
        status, out, _ = await _admin(
            capsys, "audit", "--limit", "1", "--url", url, "--data-dir", str(empty)
        )
        assert status == 0
        assert len(json.loads(out)["entries"]) == 1
