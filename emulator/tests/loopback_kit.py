"""Set-up shared by the tests that run the emulator on a loopback port with a notification
receiver beside it (control API, subscriptions, delivery, simulator): a tenant on a virtual
clock with Berlin room mailboxes, the organizer Adele and the reading app, and the two
servers with a client."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from graph_emulator.app import create_app
from graph_emulator.auth import READ, App
from graph_emulator.bench import LoopbackReceiver, serve
from graph_emulator.config import EmulatorConfig
from graph_emulator.directory import Mailbox
from graph_emulator.state import EmulatorState, new_state

START = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC)
ORGANIZER = "adele@contoso.example"
APP_SECRET = "s3cret"


def berlin_room(mailbox_id: str, upn: str, name: str) -> Mailbox:
    return Mailbox(
        id=mailbox_id, upn=upn, display_name=name, is_room=True, time_zone="Europe/Berlin"
    )


def loopback_state(*, seed: int, rooms: list[Mailbox], **config: Any) -> EmulatorState:
    """A tenant at ``START`` on a virtual clock that may notify plain-HTTP URLs, holding
    ``rooms``, the organizer and the app ``app-read`` (Calendars.Read)."""
    settings = {"virtual_clock": True, "allow_http_notifications": True, **config}
    state = new_state(EmulatorConfig(**settings), seed=seed)
    state.clock.advance(START - state.clock.now())
    for room in rooms:
        state.directory.add(room)
    state.directory.add(
        Mailbox(
            id="9f9f9f9f-0000-4000-8000-000000000001", upn=ORGANIZER, display_name="Adele Vance"
        )
    )
    state.apps.add(App("app-read", APP_SECRET, "reader", roles={READ}))
    return state


@dataclass
class Served:
    client: httpx.AsyncClient  # the emulator's base URL
    base_url: str
    receiver: LoopbackReceiver
    receiver_url: str


@asynccontextmanager
async def served(state: EmulatorState) -> AsyncIterator[Served]:
    """The emulator and a notification receiver on loopback ports, with a client."""
    receiver = LoopbackReceiver()
    async with (
        serve(create_app(state)) as base_url,
        serve(receiver) as receiver_url,
        httpx.AsyncClient(base_url=base_url, timeout=10) as client,
    ):
        yield Served(client, base_url, receiver, receiver_url)
