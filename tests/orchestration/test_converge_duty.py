"""The converge duty across real ``bookingcache serve --no-worker`` processes on one PostgreSQL
database: the tenant's periodic converge is made once for the cluster, not once per process; a
room change answered by a process that does not hold the duty is converged by the one that
does (the debounce lives in the database); and when the holder is killed (SIGKILL) the other
takes the duty over within the lease plus one renewal period (docs/operations.md, "Cluster
duties")."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bookingcache.clock import SystemClock
from bookingcache.domain.tenancy import Tenant, TenantSecrets
from bookingcache.store.sql.store import open_store
from bookingcache.tools import processes
from bookingcache.tools.processes import serve_command
from tests.support.auth import ADMIN_TOKEN
from tests.support.connectors import RecordingConnector, recording_connector
from tests.support.databases import SECRETS_KEY, sealing_box
from tests.support.tenants import SIGNING_SECRET, TENANT
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

DUTY_LEASE_S = 6.0
DUTY_RENEW_S = 2.0


@pytest.fixture
def connector() -> Iterator[tuple[RecordingConnector, str]]:
    with recording_connector() as served:
        yield served


@pytest.fixture
def postgres(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("a cluster of processes shares one PostgreSQL database")
    return database_url


@pytest.fixture
async def tenant(postgres: str, connector: tuple[RecordingConnector, str]) -> str:
    store = await open_store(postgres, box=sealing_box(), migrate=False, clock=SystemClock())
    try:
        await store.create_tenant(
            Tenant(id=TENANT, name="Contoso", connector_url=connector[1]),
            TenantSecrets(signing_secret=SIGNING_SECRET, read_token=f"read-{TENANT}-0123456789"),
        )
    finally:
        await store.close()
    return TENANT


class Api:
    def __init__(self, child: processes.Child) -> None:
        self.child = child
        self.client = httpx.Client(
            base_url=child.banner_url,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=10,
        )

    def duties(self) -> list[str]:
        ready: dict[str, Any] = self.client.get("/readyz").json()
        return [duty["duty"] for duty in ready["duties"]]

    def link(self, room: str) -> None:
        body = {"mailbox": f"{room}@contoso.example", "name": room}
        answer = self.client.put(f"/v1/tenants/{TENANT}/rooms/{room}", json=body)
        assert answer.status_code in (200, 201), answer.text


@pytest.fixture
def apis(postgres: str, tenant: str, tmp_path: Path) -> Iterator[dict[str, Api]]:
    env = {
        **os.environ,
        "BOOKINGCACHE_LOG_LEVEL": "INFO",
        "BOOKINGCACHE_ENVIRONMENT": "development",  # the connector is on loopback, over http
        "BOOKINGCACHE_ADMIN_TOKEN": ADMIN_TOKEN,
        "BOOKINGCACHE_SECRETS_KEY": SECRETS_KEY,
        "BOOKINGCACHE_DUTY_LEASE_S": str(DUTY_LEASE_S),
        "BOOKINGCACHE_DUTY_RENEW_S": str(DUTY_RENEW_S),
        # The lease alone bounds the takeover here, not the heartbeat check.
        "BOOKINGCACHE_PEER_DEAD_AFTER_S": "600",
        "BOOKINGCACHE_ORCHESTRATION_TICK_S": "0.2",
        "BOOKINGCACHE_ORCHESTRATION_DEBOUNCE_S": "0.2",
        "BOOKINGCACHE_ORCHESTRATION_RECONVERGE_EVERY_S": "3600",
    }
    running: dict[str, Api] = {}
    try:
        for name in ("api-1", "api-2"):
            argv = serve_command(
                tmp_path / name, "--database-url", postgres, "--no-worker", "--instance-id", name
            )
            child = processes.start(argv, env=env, log=tmp_path / f"{name}.log")
            child.listening(timeout_s=60)
            running[name] = Api(child)
        yield running
    finally:
        for api in running.values():
            api.client.close()
            if api.child.process.poll() is None:
                api.child.stop(timeout_s=10)


def test_one_process_converges_for_the_cluster_and_another_takes_over(
    apis: dict[str, Api], connector: tuple[RecordingConnector, str]
) -> None:
    recording, _ = connector

    def holder() -> str | None:
        holding = [name for name, api in apis.items() if "converge" in api.duties()]
        assert len(holding) <= 1, holding
        return holding[0] if holding else None

    held_by = wait_for(holder, timeout_s=30, what="a process holds the converge duty")
    # The tenant was never converged: converged once, by the holder, not once per process.
    wait_for(lambda: recording.mailboxes, timeout_s=30, what="the first converge")
    settle = time.monotonic() + 3 * DUTY_RENEW_S
    while time.monotonic() < settle:
        assert holder() == held_by
        time.sleep(0.2)
    assert recording.mailboxes == [[]]

    # A room change answered by the other process is converged by the holder.
    other = next(name for name in apis if name != held_by)
    apis[other].link("room-1")
    wait_for(
        lambda: recording.mailboxes[-1] == ["room-1@contoso.example"],
        timeout_s=30,
        what="the holder converged the other process's room change",
    )

    # The holder dies; the other takes the duty over as the lease runs out, and
    # converges the next room change itself.
    apis[held_by].child.kill()
    killed = time.monotonic()
    wait_for(lambda: "converge" in apis[other].duties(), timeout_s=30, what="the takeover")
    took_s = time.monotonic() - killed
    assert took_s < DUTY_LEASE_S + DUTY_RENEW_S + 5, took_s  # the bound, and the polls' slack
    apis[other].link("room-2")
    wait_for(
        lambda: recording.mailboxes[-1] == ["room-1@contoso.example", "room-2@contoso.example"],
        timeout_s=30,
        what="the new holder converged",
    )
