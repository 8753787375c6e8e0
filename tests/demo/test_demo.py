"""The one-command demo, run for real: ``bookingcache demo`` as a subprocess starts the
emulator, the connector and the service, serves availability that changes *now*, whatever the
day and hour, as the simulator books, prints a bulk example that works as printed, and stops every
process it started on SIGINT."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import alive

pytestmark = [pytest.mark.slow, pytest.mark.pinned_dates]


def _ready_line(process: subprocess.Popen[str], timeout_s: float) -> dict[str, Any]:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"the demo exited early ({process.poll()})")
        if line.startswith('{"demo": "ready"'):
            info: dict[str, Any] = json.loads(line)
            return info
    raise AssertionError("the demo did not get ready in time")


def _banner(process: subprocess.Popen[str]) -> str:
    """The readable block after the ready line, up to its last line."""
    assert process.stdout is not None
    lines = []
    while not (line := process.stdout.readline()).startswith("The emulator's simulator"):
        assert line, "the demo's output ended early"
        lines.append(line)
    return "".join(lines)


def _now(http: httpx.Client, state: dict[str, Any]) -> dict[str, str]:
    """Every room's status now."""
    answer = http.post(
        f"/v1/tenants/{state['tenant']}/availability", json={"rooms": state["rooms"]}
    )
    assert answer.status_code == 200, answer.text
    return {room["room_id"]: room["status"] for room in answer.json()["rooms"]}


def test_the_demo_starts_serves_changing_availability_and_stops(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOKINGCACHE_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bookingcache.cli",
            "demo",
            "--port",
            "0",
            "--rate",
            "4",
            "--data-dir",
            str(tmp_path / "demo"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        info = _ready_line(process, timeout_s=90)
        banner = _banner(process)
        # No secret in the line for scripts; they are in the readable block and the state file.
        state_file = Path(info["state_file"])
        assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
        state: dict[str, Any] = json.loads(state_file.read_text())
        for secret in ("admin_token", "read_token", "signing_secret"):
            assert state[secret] not in json.dumps(info)
            assert state[secret] in banner or secret == "signing_secret"
        assert len(json.dumps(info)) < 400
        assert info["page_url"] == state["service_url"] + "/"
        assert state["subscriptions"]["healthy"] == len(state["rooms"]) > 0
        assert "Harbour House" in banner
        assert str(tmp_path / "demo") in banner
        headers = {"Authorization": f"Bearer {state['read_token']}"}
        with httpx.Client(base_url=state["service_url"], headers=headers, timeout=30) as http:
            before = _now(http, state)
            # Whatever the day and hour, some rooms are taken now and some are free.
            assert "free" in before.values(), before
            assert any(s in ("busy", "tentative") for s in before.values()), before
            deadline = time.monotonic() + 20
            while _now(http, state) == before:
                assert time.monotonic() < deadline, "no room changed now as the simulator ran"
                time.sleep(0.5)
            health = http.get(f"/v1/tenants/{state['tenant']}/subscriptions").json()
            assert any(row["last_notification_at"] for row in health["calendars"])
        # The bulk example works as printed.
        [command] = re.findall(r"curl -X POST .*?\\\n\s+-d .*?availability\n", banner, re.S)
        printed = subprocess.run(
            ["bash", "-c", command.replace("curl ", "curl -s --fail-with-body ", 1)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert printed.returncode == 0, printed.stdout + printed.stderr
        answered = json.loads(printed.stdout)["rooms"]
        assert answered
        assert all(room["building"] == "Harbour House" for room in answered)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
    assert process.returncode == 0, stderr
    for name, pid in info["pids"].items():
        assert not alive(pid), f"{name} still runs"
