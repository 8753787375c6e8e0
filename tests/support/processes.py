"""The service's commands as child processes of a test, on the helper the demo and the
benchmarks use (``bookingcache.tools.processes``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

from bookingcache.tools import processes
from bookingcache.tools.processes import serve_command


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs; a zombie (exited, not yet reaped by its parent) counts as
    gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except OSError:
        return False
    return status != "Z"


class ServiceProcess:
    """``bookingcache serve`` in a child process, driven from a test's event loop."""

    def __init__(self, data_dir: Path, env: Mapping[str, str], *, log: Path) -> None:
        self.data_dir = data_dir
        self.env = {**os.environ, **env}
        self.log = log
        self.child: processes.Child | None = None
        self.base_url = ""

    async def start(self, timeout_s: float = 20.0) -> str:
        """Start it; its base URL once it listens."""
        self.child = processes.start(serve_command(self.data_dir), env=self.env, log=self.log)
        await asyncio.to_thread(self.child.listening, timeout_s=timeout_s)
        self.base_url = self.child.banner_url
        return self.base_url

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, nothing."""
        assert self.child is not None
        self.child.kill()

    async def wait(self) -> int:
        assert self.child is not None
        return await asyncio.to_thread(self.child.process.wait)

    async def stop(self) -> None:
        if self.child is not None:
            await asyncio.to_thread(self.child.stop, timeout_s=10)
