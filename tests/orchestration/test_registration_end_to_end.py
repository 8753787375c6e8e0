"""A customer who runs the connector only as a script, end to end: the Graph emulator (TLS, its
own thread) and the service on loopback; the tenant has no connector URL and the service reads
its calendars with its own Graph app. The customer's ``bookingcache-connector subscribe`` makes
the subscriptions at the emulator, pointing at the service (Alternative 1), and
``bookingcache-connector register --send`` gives them to the service, signed. Then Graph's
notifications are accepted (a booking reaches the availability API without any sweep), and a
``renew`` followed by another ``register`` moves the expiry the service tracks."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bookingcache.bootstrap import service_app
from bookingcache.settings import Settings
from bookingcache_connector.cli import main as connector_main
from tests.support.auth import ADMIN, ADMIN_TOKEN
from tests.support.emulated import emulated_graph
from tests.support.servers import bound_socket, loopback_url, serve_in_thread
from tests.support.waiting import wait_for

from .world import FAST, FAST_SYNC, TENANT

pytestmark = pytest.mark.slow


@dataclass
class Script:
    """The customer's side: the connector's command with its settings, and the room list."""

    env: dict[str, str]
    rooms: Path
    notification_url: str
    lifecycle_url: str
    client_state: str

    def run(self, *argv: str) -> tuple[int, Any]:
        out = io.StringIO()
        code = connector_main([*argv, "--json"], env=self.env, out=out)
        return code, json.loads(out.getvalue()) if out.getvalue() else None

    def register(self) -> tuple[int, Any]:
        """``register --send``: the subscriptions made for the service, given to it."""
        return self.run(
            "register",
            "--notification-url",
            self.notification_url,
            "--client-state",
            self.client_state,
            "--send",
        )


@dataclass
class Deployment:
    admin: httpx.Client
    control: httpx.Client
    script: Script
    mailboxes: list[str]
    organizer: str

    def health(self) -> dict[str, dict[str, Any]]:
        answer = self.admin.get(f"/v1/tenants/{TENANT}/subscriptions")
        assert answer.status_code == 200, answer.text
        return {row["mailbox"]: row for row in answer.json()["calendars"]}

    def graph_subscriptions(self) -> dict[str, dict[str, Any]]:
        answer = self.control.get("/subscriptions")
        assert answer.status_code == 200, answer.text
        return {s["id"]: s for s in answer.json()["value"]}


@contextlib.contextmanager
def deployed(tmp_path: Path) -> Iterator[Deployment]:
    with contextlib.ExitStack() as stack:
        emulated = stack.enter_context(emulated_graph(tmp_path, seed=11))
        state, emulator, cert, control = (
            emulated.state,
            emulated.emulator,
            emulated.cert,
            emulated.control,
        )
        full = emulated.apps["full"]
        rooms = sorted(state.directory.rooms(), key=lambda m: m.upn)[:2]
        sock = bound_socket()
        stack.callback(sock.close)
        service_url = loopback_url(sock)
        settings = Settings(
            environment="development",
            data_dir=tmp_path / "service",
            public_base_url=service_url,
            admin_token=SecretStr(ADMIN_TOKEN),
            run_worker=True,
            sync=FAST_SYNC.model_copy(update={"graph": emulated.service_graph()}),
            orchestration=FAST,
        )
        stack.enter_context(serve_in_thread(service_app(settings), sock))
        admin = stack.enter_context(httpx.Client(base_url=service_url, headers=ADMIN, timeout=30))
        created = admin.post(
            "/v1/tenants",
            json={
                "id": TENANT,
                "name": "Contoso",
                "event_source": "graph",
                "graph": {"directory_tenant": state.tenant_id},
            },
        )
        assert created.status_code == 201, created.text
        for index, room in enumerate(rooms):
            linked = admin.put(
                f"/v1/tenants/{TENANT}/rooms/r{index}", json={"mailbox": room.upn, "name": room.upn}
            )
            assert linked.status_code == 201, linked.text
        room_list = tmp_path / "rooms.txt"
        room_list.write_text("".join(f"{room.upn}\n" for room in rooms))
        script = Script(
            env={
                "CONNECTOR_TENANT_ID": state.tenant_id,
                "CONNECTOR_CLIENT_ID": full.client_id,
                "CONNECTOR_CLIENT_SECRET": full.client_secret,
                "CONNECTOR_AUTHORITY": emulator.root,
                "CONNECTOR_GRAPH_URL": emulator.base_url,
                "CONNECTOR_CA_BUNDLE": str(cert),
                "CONNECTOR_STATE_DIR": str(tmp_path / "connector"),
                "CONNECTOR_SERVICE_URL": service_url,
                "CONNECTOR_SERVICE_TENANT": TENANT,
                "CONNECTOR_WEBHOOK_SECRET": created.json()["secrets"]["signing_secret"],
            },
            rooms=room_list,
            notification_url=f"{service_url}/graph/notifications/{TENANT}",
            lifecycle_url=f"{service_url}/graph/lifecycle/{TENANT}",
            client_state="customer-made-" + "7c4f" * 12,
        )
        organizer = next(m.upn for m in state.directory.all() if not m.is_room)
        yield Deployment(admin, control, script, [room.upn for room in rooms], organizer)


def _z(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_script_run_connector_registers_and_its_notifications_count(tmp_path: Path) -> None:
    with deployed(tmp_path) as world:
        script = world.script
        code, rows = script.run(
            "subscribe",
            "--mailboxes",
            str(script.rooms),
            "--notification-url",
            script.notification_url,
            "--lifecycle-url",
            script.lifecycle_url,
            "--client-state",
            script.client_state,
        )
        assert code == 0, rows
        assert [row["status"] for row in rows] == ["created", "created"]
        # The service does not know them yet: it cannot converge a tenant without a connector.
        assert all(row["subscription_id"] is None for row in world.health().values())

        code, rows = script.register()
        assert code == 0, rows
        at_graph = world.graph_subscriptions()
        health = world.health()
        assert sorted(health) == sorted(world.mailboxes)
        for row in health.values():
            assert row["state"] == "healthy", row
            graph_row = at_graph[row["subscription_id"]]
            expires = dt.datetime.fromisoformat(graph_row["expirationDateTime"])
            assert dt.datetime.fromisoformat(row["expires_at"]) == expires
        first = world.mailboxes[0]
        expiry_before = dt.datetime.fromisoformat(health[first]["expires_at"])

        # A booking made in "Microsoft 365" reaches the availability API through Graph's
        # notification to the service (the sweep's bound is an hour away).
        start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).replace(
            hour=3, minute=0, second=0, microsecond=0
        )
        booked = world.control.post(
            f"/mailboxes/{first}/bookings",
            json={
                "organizer": world.organizer,
                "subject": "Review",
                "start": _z(start),
                "end": _z(start + dt.timedelta(hours=1)),
            },
        )
        assert booked.status_code in (200, 201), booked.text

        def busy() -> bool:
            answer = world.admin.get(
                f"/v1/tenants/{TENANT}/rooms/r0/availability",
                params={"start": _z(start), "end": _z(start + dt.timedelta(hours=1))},
            )
            assert answer.status_code == 200, answer.text
            return bool(answer.json()["busy"])

        wait_for(busy, what="the booking in the availability API")
        assert wait_for(
            lambda: world.health()[first]["last_notification_at"],
            what="the notification recorded for the calendar",
        )

        # Renewed at Graph, registered again: the service tracks the new expiry (a second
        # later at least, so that Graph's new expiry differs from the first).
        time.sleep(1.1)
        code, rows = script.run("renew", "--all")
        assert code == 0, rows
        code, rows = script.register()
        assert code == 0, rows
        renewed = dt.datetime.fromisoformat(world.health()[first]["expires_at"])
        assert renewed > expiry_before
        graph_expiry = world.graph_subscriptions()[world.health()[first]["subscription_id"]]
        assert renewed == dt.datetime.fromisoformat(graph_expiry["expirationDateTime"])
