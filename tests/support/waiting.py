"""Waiting for something to happen, never for a time: a condition checked until it holds,
with a generous deadline that fails the test only if it never does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], *, timeout_s: float = 20.0, what: str = "") -> T:
    """``predicate()``'s first truthy value, checked every 0.1 s (for tests whose service runs
    in other threads or processes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout_s}s: {what}")
        time.sleep(0.1)


@overload
async def until(
    check: Callable[[], Awaitable[T]],
    *,
    timeout_s: float = ...,
    what: str = ...,
    every_s: float = ...,
) -> T: ...


@overload
async def until(
    check: Callable[[], T], *, timeout_s: float = ..., what: str = ..., every_s: float = ...
) -> T: ...


async def until(
    check: Callable[[], Any],
    *,
    timeout_s: float = 10.0,
    what: str = "",
    every_s: float = 0.01,
) -> Any:
    """``check()``'s first truthy value (a plain or an async check), so that a caller acts on
    what it saw rather than on a second look that may differ."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result: Any = check()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached in {timeout_s}s: {what}")
        await asyncio.sleep(every_s)
