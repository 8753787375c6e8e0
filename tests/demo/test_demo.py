"""The one-command demo, run for real: ``bookingcache demo`` as a subprocess starts the
emulator, the connector and the service, serves availability that follows the simulator's
bookings, and stops every process it started on SIGINT."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.pinned_dates]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except OSError:
        return False
    return status != "Z"


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


def _busy(http: httpx.Client, info: dict[str, Any]) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    answer = http.post(
        f"/v1/tenants/{info['tenant']}/availability",
        json={
            "rooms": info["rooms"],
            "start": now.isoformat(),
            "end": (now + dt.timedelta(days=7)).isoformat(),
        },
    )
    assert answer.status_code == 200, answer.text
    return {room["room_id"]: room["busy"] for room in answer.json()["rooms"]}


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
        assert info["subscriptions"]["healthy"] == len(info["rooms"]) > 0
        headers = {"Authorization": f"Bearer {info['read_token']}"}
        with httpx.Client(base_url=info["service_url"], headers=headers, timeout=30) as http:
            before = _busy(http, info)
            assert any(before.values()), "the seeded week has meetings"
            deadline = time.monotonic() + 40
            while _busy(http, info) == before:
                assert time.monotonic() < deadline, "availability never followed the simulator"
                time.sleep(0.5)
            health = http.get(f"/v1/tenants/{info['tenant']}/subscriptions").json()
            assert any(row["last_notification_at"] for row in health["calendars"])
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
        assert not _alive(pid), f"{name} still runs"
