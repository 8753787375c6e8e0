"""Child processes on loopback, as the demo, the benchmarks and the tests start them: start a
command, wait for the line that says it is ready (its banner: ``bookingcache serve`` prints
``listening on http://host:port ...`` once it listens on the port it was given, 0 for any
free one), and stop it at the end.

A thread reads the child's standard output, so waiting for the banner has a real deadline
whatever the child does; what the child prints after its banner goes to its log file (or
nowhere).
"""

from __future__ import annotations

import contextlib
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import httpx

from bookingcache.errors import BookingCacheError

# The banner of ``bookingcache serve`` (and of the benchmarks' baseline server).
LISTENING = re.compile(
    r"listening on (?P<url>https?://(?P<host>\[[^\]]+\]|[^:\s/]+):(?P<port>\d+))"
)


def command(name: str, *args: str) -> list[str]:
    """``bookingcache <name> <args>`` as this interpreter runs it."""
    return [sys.executable, "-m", "bookingcache.cli", name, *args]


def serve_command(data_dir: Path, *args: str, port: int = 0) -> list[str]:
    """``bookingcache serve`` on loopback (``port`` 0: any free one) with its data in
    ``data_dir``; ``args`` add to it (``--database-url``, ``--no-worker``)."""
    return command(
        "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir), *args
    )


def worker_ready(line: str) -> bool:
    """The line ``bookingcache worker`` prints once it runs."""
    return line.startswith("bookingcache worker ") and line.rstrip().endswith(" running")


class NotAnswering(BookingCacheError):
    """The child exited, or did not get ready within the time given; the message says which."""


class Child:
    """A child process whose standard output is read line by line (``ready``)."""

    def __init__(self, process: subprocess.Popen[str], *, name: str, log: Path | None) -> None:
        self.process = process
        self.name = name
        self.log = log
        # The line ``ready`` accepted.
        self.banner = ""
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._banner_seen = threading.Event()
        self._pump = threading.Thread(target=self._read, daemon=True, name=f"{name} output")
        self._pump.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        sink: IO[str] | None = None
        try:
            for line in stdout:
                if not self._banner_seen.is_set():
                    self._lines.put(line)
                    continue
                if self.log is not None:
                    if sink is None:
                        sink = self.log.open("a", encoding="utf-8")
                    sink.write(line)
                    sink.flush()
        finally:
            self._lines.put(None)
            if sink is not None:
                sink.close()

    def ready(self, accept: Callable[[str], bool], *, timeout_s: float) -> str:
        """The first line of standard output that ``accept`` takes (earlier lines are
        skipped); ``NotAnswering`` if the child exits first or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(0.0, remaining))
            except queue.Empty:
                raise NotAnswering(
                    f"{self.name} did not get ready within {timeout_s:.0f} s"
                ) from None
            if line is None:
                raise NotAnswering(f"{self.name} exited with code {self.process.wait()}")
            if accept(line):
                self.banner = line
                self._banner_seen.set()
                return line

    def listening(self, *, timeout_s: float = 60.0) -> re.Match[str]:
        """Wait for the ``listening on http://host:port`` banner; its match."""
        line = self.ready(lambda text: LISTENING.search(text) is not None, timeout_s=timeout_s)
        match = LISTENING.search(line)
        assert match is not None
        return match

    @property
    def banner_url(self) -> str:
        """The base URL in a ``listening on`` banner."""
        match = LISTENING.search(self.banner)
        if match is None:
            raise NotAnswering(f"{self.name} printed no address: {self.banner!r}")
        return match["url"]

    def kill(self) -> None:
        """SIGKILL: no shutdown, nothing flushed."""
        self.process.kill()
        self.process.wait()
        self._close()

    def stop(self, *, timeout_s: float = 15.0, stop_signal: int = signal.SIGTERM) -> int:
        """Ask the child to stop (SIGTERM) and wait; killed when it does not within
        ``timeout_s``. Returns its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(stop_signal)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close()
        return self.process.returncode

    def _close(self) -> None:
        """The child has ended: its output is read to the end, then closed."""
        self._pump.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    name: str | None = None,
    log: Path | None = None,
    new_session: bool = False,
) -> Child:
    """Start ``argv`` with its standard output read line by line; its standard error, and its
    output after the banner, go to ``log`` (appended; nowhere without one). ``new_session``:
    the child does not get the terminal's Ctrl-C (its parent stops it in order)."""
    with contextlib.ExitStack() as stack:
        stderr: IO[str] | int = subprocess.DEVNULL
        if log is not None:
            stderr = stack.enter_context(log.open("a", encoding="utf-8"))
        process = subprocess.Popen(  # noqa: S603 (the project's own commands)
            list(argv),
            env=None if env is None else dict(env),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=new_session,
        )
    return Child(process, name=name or Path(argv[0]).name, log=log)


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    name: str | None = None,
    log: Path | None = None,
    ready: Callable[[str], bool] | None = None,
    timeout_s: float = 60.0,
) -> Iterator[Child]:
    """``argv`` started and ready (its first line ``ready`` takes; by default the
    ``listening on`` banner), stopped with SIGTERM on the way out."""
    child = start(argv, env=env, name=name, log=log)
    try:
        if ready is None:
            child.listening(timeout_s=timeout_s)
        else:
            child.ready(ready, timeout_s=timeout_s)
        yield child
    finally:
        child.stop()


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_answering(process: subprocess.Popen[Any], url: str, *, timeout_s: float) -> None:
    """Return once ``url`` answers HTTP at all (any status); ``NotAnswering`` if ``process``
    exits first or ``timeout_s`` passes (for a child that prints no banner)."""
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
