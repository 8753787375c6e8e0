"""The allocator a benchmark runs the service's processes with (``bench.allocator``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bookingcache.tools.bench.allocator import check_allocator, with_allocator
from bookingcache.tools.bench.http import BenchError


def test_jemalloc_is_preloaded_in_place_of_any_other_library() -> None:
    env = {"PATH": "/usr/bin", "LD_PRELOAD": "libother.so"}
    assert with_allocator(env, "jemalloc") == {"PATH": "/usr/bin", "LD_PRELOAD": "libjemalloc.so.2"}
    assert with_allocator(env, "system") == {"PATH": "/usr/bin"}


def test_a_process_without_the_library_is_told_apart_from_one_with_it() -> None:
    # This test's own process runs with the C library's allocator.
    check_allocator({"tests": os.getpid()}, "system")
    with pytest.raises(BenchError, match=r"tests runs without libjemalloc\.so\.2"):
        check_allocator({"tests": os.getpid()}, "jemalloc")
    with subprocess.Popen(
        [sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=with_allocator(os.environ, "jemalloc"),
    ) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        assert child.stdout.readline() == b"up\n"  # loaded and running
        check_allocator({"child": child.pid}, "jemalloc")
        child.stdin.close()
        assert child.wait(timeout=10) == 0
