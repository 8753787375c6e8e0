"""Imported at start-up by every Python process .ci/pinned-dates runs (it puts this directory on
PYTHONPATH), the test run's child processes included.

Debian 12's libfaketime (0.9.10) with FAKETIME_DONT_FAKE_MONOTONIC=1 turns the absolute
CLOCK_MONOTONIC deadline that ``time.sleep`` hands to ``clock_nanosleep`` (Python 3.11 and later)
into a negative time, so every ``time.sleep`` fails with EINVAL (libfaketime issue 426, fixed after
0.9.10). Where that happens, ``time.sleep`` waits in ``select`` instead, whose relative timeout
libfaketime passes through unchanged. Nothing changes where ``time.sleep`` works.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import operator
import os
import select
import sys
import time
from typing import SupportsIndex


def _select_sleep(seconds: float | SupportsIndex) -> None:
    remaining = seconds if isinstance(seconds, float) else float(operator.index(seconds))
    if remaining < 0:
        raise ValueError("sleep length must be non-negative")
    deadline = time.monotonic() + remaining
    while remaining > 0:
        select.select([], [], [], remaining)
        remaining = deadline - time.monotonic()


def _sleep_is_broken() -> bool:
    try:
        time.sleep(1e-6)
    except OSError:
        return True
    return False


if _sleep_is_broken():
    time.sleep = _select_sleep


def _chain() -> None:
    """Run the ``sitecustomize`` this one hides, if the interpreter has one."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


_chain()
