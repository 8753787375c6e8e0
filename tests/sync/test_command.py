"""``bookingcache worker`` as a real process: starts, works the queue, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_worker_command_runs_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "BOOKINGCACHE_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen(
        [sys.executable, "-m", "bookingcache.cli", "worker", "--data-dir", str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("bookingcache worker ") and line.rstrip().endswith(" running")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    # The worker migrated the embedded database it was pointed at.
    assert (tmp_path / "bookingcache.db").exists()
