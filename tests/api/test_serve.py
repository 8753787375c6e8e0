"""``bookingcache serve`` as a real process on a loopback port."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from bookingcache.tools import processes
from bookingcache.tools.processes import command, serve_command
from tests.support.databases import SECRETS_KEY

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
BANNER = re.compile(r"listening on (http://127\.0\.0\.1:\d+) admin token: (\S+) \(new; kept in ")


def _environment() -> dict[str, str]:
    """The test's environment without its ``BOOKINGCACHE_*`` settings, with a secrets key
    (production, the default, needs one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOKINGCACHE_")}
    env["BOOKINGCACHE_SECRETS_KEY"] = SECRETS_KEY
    return env


def _first_line(data_dir: Path, env: dict[str, str], log: Path) -> str:
    """The banner of a ``serve`` started on ``data_dir`` and stopped again at once."""
    child = processes.start(serve_command(data_dir), env=env, log=log)
    try:
        return child.ready(lambda _: True, timeout_s=START_TIMEOUT_S)
    finally:
        assert child.stop(timeout_s=STOP_TIMEOUT_S) == 0


@pytest.mark.slow
def test_serve_starts_prints_and_stops_cleanly(tmp_path: Path) -> None:
    env = _environment()
    data_dir = tmp_path / "data"
    log = tmp_path / "serve.log"
    child = processes.start(serve_command(data_dir), env=env, log=log)
    try:
        line = child.ready(lambda _: True, timeout_s=START_TIMEOUT_S)
        match = BANNER.search(line)
        assert match, f"unexpected first line {line!r}"
        url, token = match.groups()
        assert (data_dir / "admin-token").read_text().strip() == token
        assert (data_dir / "bookingcache.db").exists()

        with httpx.Client(base_url=url, timeout=5.0) as client:
            assert client.get("/readyz").json()["status"] == "ready"
            assert client.get("/v1/tenants").status_code == 401
            listed = client.get("/v1/tenants", headers={"Authorization": f"Bearer {token}"})
            assert listed.status_code == 200
            assert listed.json() == {"tenants": []}
    finally:
        assert child.stop(timeout_s=STOP_TIMEOUT_S) == 0
    assert "Traceback" not in log.read_text()

    # The token was shown once, when it was made; later starts say where it is.
    again = _first_line(data_dir, env, log)
    assert "listening on http://127.0.0.1:" in again
    assert token not in again
    assert f"(admin token in {data_dir / 'admin-token'})" in again
    assert token not in log.read_text()


@pytest.mark.slow
def test_serve_never_shows_a_configured_admin_token(tmp_path: Path) -> None:
    configured = "a-configured-admin-token-0123456789"
    env = _environment()
    env["BOOKINGCACHE_ADMIN_TOKEN"] = configured
    log = tmp_path / "serve.log"
    line = _first_line(tmp_path / "data", env, log)
    assert line.rstrip().endswith("(admin token from the configuration)"), line
    assert configured not in line
    assert configured not in log.read_text()
    assert not (tmp_path / "data" / "admin-token").exists()


@pytest.mark.slow
def test_serve_refuses_a_placeholder_admin_token(tmp_path: Path) -> None:
    env = _environment()
    env["BOOKINGCACHE_ADMIN_TOKEN"] = "changeme"
    result = subprocess.run(
        command(
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path),
        ),
        capture_output=True,
        text=True,
        env=env,
        timeout=START_TIMEOUT_S,
    )
    assert result.returncode == 2
    assert "placeholder" in result.stderr
    assert result.stdout == ""


@pytest.mark.slow
def test_serve_reports_a_port_in_use(tmp_path: Path) -> None:
    env = _environment()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            command(
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(tmp_path),
            ),
            capture_output=True,
            text=True,
            env=env,
            timeout=START_TIMEOUT_S,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_served_process_takes_the_socket_peer_as_the_client_address(tmp_path: Path) -> None:
    """X-Forwarded-For from a loopback peer does not spread failed guesses over addresses."""
    env = _environment()
    child = processes.start(serve_command(tmp_path / "data"), env=env, log=tmp_path / "serve.log")
    try:
        match = BANNER.search(child.ready(lambda _: True, timeout_s=START_TIMEOUT_S))
        assert match
        url, token = match.groups()
        with httpx.Client(base_url=url, timeout=5.0) as client:
            for n in range(20):
                guess = {"Authorization": f"Bearer guess-{n}", "X-Forwarded-For": f"192.0.2.{n}"}
                assert client.get("/v1/tenants", headers=guess).status_code == 401
            guess = {"Authorization": "Bearer guess", "X-Forwarded-For": "198.51.100.1"}
            throttled = client.get("/v1/tenants", headers=guess)
            assert throttled.status_code == 429
            assert throttled.headers["retry-after"].isdigit()
            admin = {"Authorization": f"Bearer {token}", "X-Forwarded-For": "192.0.2.1"}
            assert client.get("/v1/tenants", headers=admin).status_code == 200
    finally:
        assert child.stop(timeout_s=STOP_TIMEOUT_S) == 0
