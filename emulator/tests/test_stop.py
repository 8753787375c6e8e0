"""Stopping the graph-emulator command: SIGTERM (a service manager, a test harness) and Ctrl-C
(SIGINT) both let the request in flight finish, exit with 0, and remove the TLS certificate and
its private key."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

# Long enough that the signal arrives while the request is being served.
LATENCY_MS = 1000


def start(*args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "graph_emulator.cli", "--port", "0", "--seed", "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise AssertionError(process.communicate()[1])
    return process, json.loads(line)


@pytest.mark.parametrize(
    ("stop_signal", "own_dir"),
    [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGTERM, True)],
    ids=["sigterm-temporary-folder", "ctrl-c-temporary-folder", "sigterm-given-folder"],
)
def test_a_signal_stops_gracefully_and_removes_the_certificate(
    stop_signal: signal.Signals, own_dir: bool, tmp_path: Path
) -> None:
    given = tmp_path / "tls"
    if own_dir:
        given.mkdir()
        (given / "notes.txt").write_text("the operator's own file")
    extra = ["--tls-dir", str(given)] if own_dir else []
    process, info = start("--tls", "--latency-ms", str(LATENCY_MS), *extra)
    cert = Path(info["cert_path"])
    key = cert.parent / "key.pem"
    try:
        assert cert.is_file()
        assert key.is_file()
        assert own_dir == (cert.parent == given)
        context = ssl.create_default_context(cafile=str(cert))
        room = info["mailboxes"][0]["upn"]
        answers: list[int] = []
        with httpx.Client(verify=context, timeout=30) as client:
            token = client.post(
                info["authority"] + "/oauth2/v2.0/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": info["client_id"],
                    "client_secret": info["client_secret"],
                    "scope": "https://graph.microsoft.com/.default",
                },
            ).json()["access_token"]

            def read_calendar() -> None:
                response = client.get(
                    f"{info['base_url']}/users/{room}/calendar",
                    headers={"Authorization": f"Bearer {token}"},
                )
                answers.append(response.status_code)

            reader = threading.Thread(target=read_calendar)
            reader.start()
            # The request is in the emulator (counted) before the signal is sent.
            with httpx.Client(verify=context, timeout=10) as control:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    counts = control.get(info["control_url"] + "/counters").json()
                    if counts["requests_per_mailbox"]:
                        break
                    time.sleep(0.05)
                else:
                    raise AssertionError("the request never reached the emulator")
            process.send_signal(stop_signal)
            reader.join(timeout=20)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    # Graceful: the request in flight got its answer; the exit is a normal one, without a
    # traceback; the key is gone.
    assert answers == [200]
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert not key.exists()
    assert not cert.exists()
    if own_dir:
        assert (given / "notes.txt").is_file()
    else:
        assert not cert.parent.exists()


def test_a_signal_during_start_up_still_removes_the_certificate(tmp_path: Path) -> None:
    given = tmp_path / "made-by-the-emulator"
    command = [sys.executable, "-m", "graph_emulator.cli", "--port", "0", "--seed", "demo"]
    process = subprocess.Popen(
        [*command, "--tls", "--tls-dir", str(given)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Once the folder exists the emulator is writing the certificate or serving.
        deadline = time.monotonic() + 20
        while not given.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert given.exists()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert not given.exists()
