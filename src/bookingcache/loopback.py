"""Child processes on loopback, as the demo and the benchmarks start them: a free port to give
one, and waiting until it answers HTTP."""

from __future__ import annotations

import socket
import subprocess
import time
from typing import Any

import httpx


class NotAnswering(Exception):
    """The child exited, or did not answer within the time given; the message says which."""


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_answering(process: subprocess.Popen[Any], url: str, *, timeout_s: float) -> None:
    """Return once ``url`` answers HTTP at all (any status); ``NotAnswering`` if ``process``
    exits first or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise NotAnswering(f"exited with code {process.returncode}")
        try:
            httpx.get(url, timeout=2, trust_env=False)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise NotAnswering(f"did not answer at {url} within {timeout_s:.0f} s")
