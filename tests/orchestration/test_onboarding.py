"""The operator watches a tenant's onboarding: rooms linked, subscribed and fresh, through the
admin API and, summed over the tenants, the Prometheus gauges."""

from __future__ import annotations

from typing import Any

import pytest

from bookingcache.orchestration import orchestrator
from bookingcache_connector.subscriptions import Desired, SubscriptionManager
from bookingcache_connector.web import Handlers, Request, Response
from tests.support.auth import ADMIN
from tests.support.waiting import wait_for

from .world import TENANT, World

pytestmark = pytest.mark.slow


def _progress(world: World) -> dict[str, int]:
    answer = world.admin.get(f"/v1/tenants/{TENANT}/onboarding")
    assert answer.status_code == 200, answer.text
    body: dict[str, int] = answer.json()
    return body


def _complete(progress: dict[str, int], rooms: int = 3) -> bool:
    return progress["subscribed"] == progress["fresh"] == rooms


def _import(world: World, count: int) -> list[str]:
    rooms = [
        {"room_id": f"r{n}", "mailbox": room["upn"], "name": f"Room {n}"}
        for n, room in enumerate(world.rooms[:count])
    ]
    imported = world.admin.post(f"/v1/tenants/{TENANT}/rooms:import", json={"rooms": rooms})
    assert imported.status_code == 200, imported.text
    return sorted(room["mailbox"] for room in rooms)


def _record_converges(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], bool]]:
    """The connector's converges, as (mailboxes, whether the others were pruned)."""
    calls: list[tuple[list[str], bool]] = []
    converge = SubscriptionManager.converge

    async def recording(
        self: SubscriptionManager, desired: Desired, *, prune: bool = True
    ) -> list[dict[str, Any]]:
        if desired.mailboxes:
            calls.append((sorted(desired.mailboxes), prune))
        return await converge(self, desired, prune=prune)

    monkeypatch.setattr(SubscriptionManager, "converge", recording)
    return calls


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


def test_many_new_rooms_are_subscribed_part_by_part(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(orchestrator, "SUBSCRIBE_PART", 2)
    calls = _record_converges(monkeypatch)
    mailboxes = _import(world, 5)
    wait_for(lambda: _complete(_progress(world), 5), what="every room subscribed and read")
    # Parts of two, each touching only its own mailboxes, then the whole set once.
    assert calls[:4] == [
        (mailboxes[0:2], False),
        (mailboxes[2:4], False),
        (mailboxes[4:5], False),
        (mailboxes, True),
    ]
    assert set(world.graph_subscriptions()) == set(mailboxes)
    health = world.health()
    assert {health[m]["state"] for m in mailboxes} == {"healthy"}


def test_a_connector_without_partial_converges_gets_the_whole_set(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(orchestrator, "SUBSCRIBE_PART", 2)
    calls = _record_converges(monkeypatch)
    handle = Handlers.handle

    async def without_patch(self: Handlers, request: Request) -> Response:
        if request.method.upper() == "PATCH":  # as a connector that predates it answers
            return Response.problem(405, "Method Not Allowed", "PATCH is not allowed here")
        return await handle(self, request)

    monkeypatch.setattr(Handlers, "handle", without_patch)
    mailboxes = _import(world, 5)
    wait_for(lambda: _complete(_progress(world), 5), what="every room subscribed and read")
    assert calls[0] == (mailboxes, True)
    assert set(world.graph_subscriptions()) == set(mailboxes)
