"""The Graph emulator in process, reached over ``httpx.ASGITransport``: a tenant of room
mailboxes, the emulator's apps, and the emulator's own view of each calendar as the truth."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from bookingcache.domain.tenancy import GraphAccess
from bookingcache.settings import GraphSettings
from graph_emulator.app import create_app
from graph_emulator.auth import App
from graph_emulator.changes import ChangeType
from graph_emulator.clock import Clock
from graph_emulator.config import EmulatorConfig
from graph_emulator.directory import Mailbox
from graph_emulator.faults import FaultRegistry
from graph_emulator.lifecycle import SubscriptionHub
from graph_emulator.seed import add_default_apps
from graph_emulator.state import EmulatorState, new_state

GRAPH_BASE = "https://graph.emulator.test/v1.0"
AUTHORITY_HOST = "https://login.emulator.test"
TENANT = "contoso"


@dataclass
class Changes:
    """A ``ChangeSink`` in place of the emulator's subscription hub: it keeps what Exchange
    reported, in order, so a test can hand the notifications to the service itself."""

    seen: list[tuple[str, str, ChangeType]] = field(default_factory=list)

    def event_changed(self, *, mailbox_id: str, event_id: str, change_type: ChangeType) -> None:
        self.seen.append((mailbox_id, event_id, change_type))

    def take(self) -> list[tuple[str, str, ChangeType]]:
        taken, self.seen = self.seen, []
        return taken


@dataclass
class Emulated:
    state: EmulatorState
    apps: dict[str, App]
    rooms: list[Mailbox]
    organizer: Mailbox
    transport: httpx.ASGITransport
    changes: Changes
    # The emulator's fault registry (its control routes need the subscription hub, which the
    # change recorder replaces, so tests set faults here directly).
    faults: FaultRegistry

    def settings(self, *, app: str = "full", page_size: int = 100, **extra: Any) -> GraphSettings:
        chosen = self.apps[app]
        permission: Literal["read", "read_basic"] = "read_basic" if app == "readbasic" else "read"
        return GraphSettings(
            client_id=chosen.client_id,
            client_secret=SecretStr(chosen.client_secret),
            authority_host=AUTHORITY_HOST,
            graph_base_url=GRAPH_BASE,
            permission=permission,
            page_size=page_size,
            **extra,
        )

    @property
    def access(self) -> GraphAccess:
        """The service tenant's graph access: the emulator's directory, read with the service's
        shared app (``settings``)."""
        return GraphAccess(directory_tenant=self.state.tenant_id)

    def book(self, room: Mailbox, start: dt.datetime, minutes: int, **extra: Any) -> str:
        end = start + dt.timedelta(minutes=minutes)
        body = {
            "subject": "Planning",
            "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            "end": {"dateTime": end.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        } | extra
        created = self.state.calendars.create_event(room.id, body, organizer=self.organizer.upn)
        return str(created["id"])

    def move(self, room: Mailbox, event_id: str, start: dt.datetime, minutes: int) -> None:
        end = start + dt.timedelta(minutes=minutes)
        self.state.calendars.update_event(
            room.id,
            event_id,
            {
                "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
                "end": {"dateTime": end.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            },
        )

    def truth(
        self, room: Mailbox, start: dt.datetime, end: dt.datetime
    ) -> set[tuple[str, dt.datetime, dt.datetime, bool]]:
        """(id, start, end, cancelled) of every instance in the window, by the emulator."""
        return {
            (
                instance.id,
                instance.start.astimezone(dt.UTC),
                instance.end.astimezone(dt.UTC),
                bool(instance.event.is_cancelled),
            )
            for instance in self.state.calendars.instances(room, start, end)
        }

    def requests(self, room: Mailbox) -> int:
        return self.state.counters.requests_per_mailbox.get(room.id, 0)


def emulate(
    *, rooms: int = 3, start: dt.datetime, config: EmulatorConfig | None = None
) -> Emulated:
    state = new_state(config or EmulatorConfig(), seed=11, clock=Clock(virtual=True, start=start))
    mailboxes = [
        state.directory.add(
            Mailbox(
                id=str(uuid.UUID(int=index + 1)),
                upn=f"room-{index}@{TENANT}.example",
                display_name=f"Room {index}",
                time_zone="Europe/Berlin",
                is_room=True,
            )
        )
        for index in range(rooms)
    ]
    organizer = state.directory.add(
        Mailbox(id=str(uuid.UUID(int=10_000)), upn="kari@contoso.example", display_name="Kari N")
    )
    apps = add_default_apps(state, scope=mailboxes[:1])
    app = create_app(state)
    hub = state.notifications
    assert isinstance(hub, SubscriptionHub)
    changes = Changes()
    state.notifications = changes
    return Emulated(
        state=state,
        apps=apps,
        rooms=mailboxes,
        organizer=organizer,
        transport=httpx.ASGITransport(app=app),
        changes=changes,
        faults=hub.faults,
    )
