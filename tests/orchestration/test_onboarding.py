"""The operator watches a tenant's onboarding: rooms linked, subscribed and fresh, through the
admin API and, summed over the tenants, the Prometheus gauges."""

from __future__ import annotations

import pytest

from tests.support.auth import ADMIN
from tests.support.waiting import wait_for

from .world import TENANT, World

pytestmark = pytest.mark.slow


def _progress(world: World) -> dict[str, int]:
    answer = world.admin.get(f"/v1/tenants/{TENANT}/onboarding")
    assert answer.status_code == 200, answer.text
    body: dict[str, int] = answer.json()
    return body


def _complete(progress: dict[str, int]) -> bool:
    return progress["subscribed"] == progress["fresh"] == 3


def test_progress_counts_rooms_until_every_one_is_subscribed_and_fresh(world: World) -> None:
    assert _progress(world) == {
        "tenant": TENANT,
        "linked": 0,
        "subscribed": 0,
        "fresh": 0,
        "staleness_bound_s": 3600,
    }
    rooms = [
        {"room_id": f"r{n}", "mailbox": room["upn"], "name": f"Room {n}"}
        for n, room in enumerate(world.rooms[:3])
    ]
    imported = world.admin.post(f"/v1/tenants/{TENANT}/rooms:import", json={"rooms": rooms})
    assert imported.status_code == 200, imported.text
    assert _progress(world)["linked"] == 3
    wait_for(lambda: _complete(_progress(world)), what="every room subscribed and read")
    assert _progress(world)["linked"] == 3
    # The read token sees its own tenant's progress too.
    read = {"Authorization": f"Bearer {world.read_token}"}
    assert world.admin.get(f"/v1/tenants/{TENANT}/onboarding", headers=read).status_code == 200
    world.admin.get("/v1/subscriptions")  # publishes the gauges
    metrics = world.admin.get("/metrics").text
    for state in ("linked", "subscribed", "fresh"):
        assert f'bookingcache_onboarding_rooms{{state="{state}"}} 3.0' in metrics


def test_an_unknown_tenant_is_a_404(world: World) -> None:
    answer = world.admin.get("/v1/tenants/nobody/onboarding", headers=ADMIN)
    assert answer.status_code == 404
