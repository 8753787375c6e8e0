"""A private PostgreSQL server for one test: its own data directory and port, made with the
server package's ``initdb`` and run with its ``pg_ctl``, so that the test may stop it, start it
again and end every connection without touching the machine's shared server.

``initdb`` refuses to run as root: as root (CI) every command runs as the ``postgres`` system
user (``runuser -u postgres --``), in a directory that user owns; as anyone else, as that user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import asyncpg

from bookingcache.tools.processes import free_port


def _bindir() -> Path:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        raise RuntimeError("pg_config is not on PATH: install PostgreSQL's server package")
    found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
    return Path(found.stdout.strip())


class PrivatePostgres:
    """``start()``, ``stop()``, ``terminate()`` a private server; ``url(name)`` reaches one of
    its databases as the ``postgres`` role, over TCP on loopback with trust authentication."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="bookingcache-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.root, user="postgres", group="postgres")

    def _run(self, *argv: str, timeout_s: float = 60) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_root else []
        done = subprocess.run(
            [*prefix, *argv], capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{Path(argv[0]).name} failed: {done.stderr or done.stdout}")

    def init(self) -> None:
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c max_connections=200 -c fsync=off"
        )
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop``: ``fast`` ends the sessions cleanly, ``immediate`` is a crash (the
        server recovers from its write-ahead log at the next start)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def execute(self, statement: str, database: str = "postgres") -> str:
        connection = await asyncpg.connect(self.url(database), timeout=10)
        try:
            result: str = await connection.execute(statement)
            return result
        finally:
            await connection.close()

    async def terminate(self, database: str) -> int:
        """End every session on ``database`` but this one (``pg_terminate_backend``): how many."""
        connection = await asyncpg.connect(self.url(), timeout=10)
        try:
            ended = await connection.fetchval(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()) AS ended",
                database,
            )
            return int(ended)
        finally:
            await connection.close()

    async def activity(self) -> str:
        """What every session of the server is doing, one line each (for a failure's report)."""
        connection = await asyncpg.connect(self.url(), timeout=10)
        try:
            rows = await connection.fetch(
                "SELECT application_name, state, wait_event_type, wait_event, "
                "now() - xact_start AS in_transaction, left(query, 120) AS query "
                "FROM pg_stat_activity WHERE datname IS NOT NULL ORDER BY xact_start"
            )
        finally:
            await connection.close()
        return "\n".join(" | ".join(str(value) for value in row.values()) for row in rows)

    def remove(self) -> None:
        """Stop the server if it runs, and delete its directory."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
