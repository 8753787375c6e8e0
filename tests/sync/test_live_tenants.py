"""Tenants configured live (issue 16, part 1), across real processes: an API process
(``serve --no-worker``) takes the admin changes, a separate ``bookingcache worker`` reads Graph
through the emulator with the tenant's own app, and the real connector keeps Graph's
subscriptions. Nothing restarts:

- the worker's reads fail while the stored client secret is wrong and succeed once a PATCH
  stores the right one (its cached MSAL app is rebuilt);
- a PATCH of the way in re-converges the tenant's subscriptions to the connector's relay.

On both engines (SQLite: the worker sees the change at its next look; PostgreSQL alike)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bookingcache.tools.processes import command, running, serve_command, worker_ready
from graph_emulator.server import BackgroundEmulator
from tests.support.auth import ADMIN, ADMIN_TOKEN
from tests.support.databases import SECRETS_KEY, opened_store
from tests.support.emulated import emulated_graph, serve_connector
from tests.support.servers import bound_socket, loopback_url

pytestmark = pytest.mark.slow

TENANT = "contoso"
WAIT_S = 60.0
WRONG_SECRET = "not-the-apps-secret-0123456789"


async def _until(check: Callable[[], Any], what: str, *, timeout_s: float = WAIT_S) -> Any:
    """``check()``'s first true answer (awaited when it is a coroutine), polled."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
        await asyncio.sleep(0.2)


def _environment(emulator: BackgroundEmulator, cert: Path) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("BOOKINGCACHE_")}
    return inherited | {
        "BOOKINGCACHE_ENVIRONMENT": "development",
        "BOOKINGCACHE_ADMIN_TOKEN": ADMIN_TOKEN,
        "BOOKINGCACHE_SECRETS_KEY": SECRETS_KEY,
        "BOOKINGCACHE_LOG_LEVEL": "WARNING",
        # No shared Graph app: the tenant brings its own through the admin API.
        "BOOKINGCACHE_SYNC_GRAPH__AUTHORITY_HOST": emulator.root,
        "BOOKINGCACHE_SYNC_GRAPH__GRAPH_BASE_URL": emulator.base_url,
        "BOOKINGCACHE_SYNC_GRAPH__CA_BUNDLE": str(cert),
        "BOOKINGCACHE_SYNC_BACKOFF_BASE_S": "0.2",
        "BOOKINGCACHE_SYNC_BACKOFF_MAX_S": "1",
        "BOOKINGCACHE_SYNC_MAX_TRIES": "1000",
        "BOOKINGCACHE_ORCHESTRATION_DEBOUNCE_S": "0.2",
        "BOOKINGCACHE_ORCHESTRATION_TICK_S": "0.5",
    }


async def test_admin_changes_reach_a_separate_worker_and_the_subscriptions_without_restart(
    tmp_path: Path, database_url: str
) -> None:
    with contextlib.ExitStack() as stack:
        graph = stack.enter_context(emulated_graph(tmp_path, seed=11))
        state, emulator, control = graph.state, graph.emulator, graph.control
        app = graph.apps["full"]
        room = sorted(state.directory.rooms(), key=lambda m: m.upn)[0]
        env = _environment(emulator, graph.cert)
        data_dir = tmp_path / "service"
        service = stack.enter_context(
            running(
                serve_command(data_dir, "--database-url", database_url, "--no-worker"),
                env=env,
                log=tmp_path / "service.log",
            )
        )
        stack.enter_context(
            running(
                command("worker", "--data-dir", str(data_dir), "--database-url", database_url),
                env=env,
                log=tmp_path / "worker.log",
                ready=worker_ready,
            )
        )
        service_url = service.banner_url
        admin = stack.enter_context(httpx.Client(base_url=service_url, headers=ADMIN, timeout=30))
        connector_sock = bound_socket()
        stack.callback(connector_sock.close)
        connector_url = loopback_url(connector_sock)
        created = admin.post(
            "/v1/tenants",
            json={
                "id": TENANT,
                "name": "Contoso",
                "event_source": "graph",
                "connector_url": connector_url,
                "graph": {
                    "directory_tenant": state.tenant_id,
                    "client_id": app.client_id,
                    "client_secret": WRONG_SECRET,
                },
            },
        )
        assert created.status_code == 201, created.text
        assert created.json()["notification_mode"] == "direct"
        stack.enter_context(
            serve_connector(
                emulator,
                app,
                connector_sock,
                webhook_secret=created.json()["secrets"]["signing_secret"],
                service_url=service_url,
                service_tenant=TENANT,
                state_dir=tmp_path / "connector",
            )
        )
        linked = admin.put(
            f"/v1/tenants/{TENANT}/rooms/r1", json={"mailbox": room.upn, "name": "Room"}
        )
        assert linked.status_code == 201, linked.text

        def notified_at(url: str) -> Callable[[], bool]:
            def check() -> bool:
                answer = control.get("/subscriptions")
                assert answer.status_code == 200, answer.text
                return any(
                    s["mailboxId"] == room.id and s["notificationUrl"] == url
                    for s in answer.json()["value"]
                )

            return check

        await _until(
            notified_at(f"{service_url}/graph/notifications/{TENANT}"), "a direct subscription"
        )
        async with opened_store(database_url) as store:

            async def calendar_error() -> str | None:
                return (await store.get_calendar(TENANT, room.upn)).last_error

            async def calendar_synced() -> bool:
                return (await store.get_calendar(TENANT, room.upn)).last_success_at is not None

            # The worker reads with the stored, wrong secret: the directory refuses it.
            error = await _until(calendar_error, "a refused read")
            assert "graph-refused-auth" in error
            assert not await calendar_synced()
            fixed = admin.patch(
                f"/v1/tenants/{TENANT}", json={"graph": {"client_secret": app.client_secret}}
            )
            assert fixed.status_code == 200, fixed.text
            assert fixed.json()["graph"]["client_secret_set"] is True
            # The worker, never restarted, reads with the new secret.
            await _until(calendar_synced, "a read with the new secret")

        moved = admin.patch(f"/v1/tenants/{TENANT}", json={"notification_mode": "relay"})
        assert moved.status_code == 200, moved.text
        await _until(notified_at(f"{connector_url}/graph/notifications"), "a relay subscription")
        logs = (tmp_path / "service.log").read_text() + (tmp_path / "worker.log").read_text()
        assert app.client_secret not in logs
        assert WRONG_SECRET not in logs
