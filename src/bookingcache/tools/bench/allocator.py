"""The memory allocator a benchmark's service processes run with: jemalloc, preloaded as the
service's image does (deploy/Dockerfile), or the C library's own. Under steady load glibc's
heap kept growing in the workers while their Python objects stayed level (docs/operations.md,
"Memory"), so a benchmark that watches memory runs the processes as the image does."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from bookingcache.tools.bench.http import BenchError

# What each allocator preloads into the processes (None: nothing).
ALLOCATORS: dict[str, str | None] = {"jemalloc": "libjemalloc.so.2", "system": None}


def with_allocator(env: Mapping[str, str], allocator: str) -> dict[str, str]:
    """``env`` with ``allocator``'s library preloaded, or with nothing preloaded."""
    library = ALLOCATORS[allocator]
    env = {name: value for name, value in env.items() if name != "LD_PRELOAD"}
    return env | {"LD_PRELOAD": library} if library is not None else env


def check_allocator(pids: Mapping[str, int], allocator: str) -> None:
    """Each process has ``allocator``'s library loaded (the loader only warns, and runs the
    process without it, when the library is missing)."""
    library = ALLOCATORS[allocator]
    if library is None:
        return
    for name, pid in pids.items():
        if library not in Path(f"/proc/{pid}/maps").read_text():
            raise BenchError(
                f"{name} runs without {library}: install it (Debian's libjemalloc2, "
                "scripts/system-packages) or run with --allocator system"
            )
