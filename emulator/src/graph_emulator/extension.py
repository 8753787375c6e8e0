"""How optional parts of the emulator (subscriptions and delivery, the control API) plug into the
app: each ``install(state)`` returns its routes and the start-up and shut-down steps it needs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.routing import BaseRoute


@dataclass
class Extension:
    routes: list[BaseRoute] = field(default_factory=list)
    startup: Callable[[], Awaitable[None]] | None = None
    shutdown: Callable[[], Awaitable[None]] | None = None
