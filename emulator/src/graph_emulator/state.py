"""The emulator's whole in-memory world, shared by every route and extension."""

from __future__ import annotations

import random
import secrets
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from graph_emulator.changes import ChangeSink, NullSink
from graph_emulator.clock import Clock
from graph_emulator.config import EmulatorConfig
from graph_emulator.counters import Counters
from graph_emulator.directory import Directory
from graph_emulator.hooks import MailboxRequestHook
from graph_emulator.identity_faults import IdentityFaults

if TYPE_CHECKING:
    from graph_emulator.auth import AppRegistry
    from graph_emulator.calendars import CalendarStore
    from graph_emulator.delta import DeltaStore
    from graph_emulator.throttle import Throttle


@dataclass
class EmulatorState:
    config: EmulatorConfig
    clock: Clock
    rng: random.Random
    tenant_id: str
    directory: Directory
    apps: AppRegistry
    calendars: CalendarStore
    delta: DeltaStore
    throttle: Throttle
    counters: Counters
    notifications: ChangeSink = field(default_factory=NullSink)
    # Called before every mailbox-scoped request (app id, mailbox id); may raise GraphError or
    # sleep. Fault injection appends here.
    mailbox_request_hooks: list[MailboxRequestHook] = field(default_factory=list)
    token_secret: bytes = b""
    # Token endpoint faults and revoked tokens (control API).
    identity_faults: IdentityFaults = field(default_factory=IdentityFaults)


def new_state(
    config: EmulatorConfig | None = None,
    *,
    seed: int = 0,
    clock: Clock | None = None,
    tenant_id: str | None = None,
) -> EmulatorState:
    """An empty tenant (no mailboxes, no apps); ``graph_emulator.seed`` fills it."""
    from graph_emulator.auth import AppRegistry
    from graph_emulator.calendars import CalendarStore
    from graph_emulator.delta import DeltaStore
    from graph_emulator.throttle import Throttle

    config = config or EmulatorConfig()
    # Deterministic ids and data from the seed; never used for secrets.
    rng = random.Random(seed)  # noqa: S311
    clock = clock or Clock(virtual=config.virtual_clock)
    tenant = tenant_id or str(uuid.UUID(int=rng.getrandbits(128), version=4))
    counters = Counters()
    directory = Directory()
    holder: list[EmulatorState] = []
    calendars = CalendarStore(
        directory=directory,
        clock=clock,
        config=config,
        rng=random.Random(rng.getrandbits(64)),  # noqa: S311
        sink=lambda: holder[0].notifications,
    )
    state = EmulatorState(
        config=config,
        clock=clock,
        rng=rng,
        tenant_id=tenant,
        directory=directory,
        apps=AppRegistry(),
        calendars=calendars,
        delta=DeltaStore(config=config, clock=clock),
        throttle=Throttle(config=config, clock=clock, counters=counters),
        counters=counters,
        token_secret=secrets.token_bytes(32),
    )
    holder.append(state)
    return state
