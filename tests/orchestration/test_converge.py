"""Linking and unlinking rooms converges the connector's subscriptions at "Graph"."""

from __future__ import annotations

import pytest

from tests.support.waiting import wait_for

from .world import World

pytestmark = pytest.mark.slow


def test_linking_and_unlinking_rooms_converges_the_subscriptions(world: World) -> None:
    a, b, c = (room["upn"] for room in world.rooms[:3])
    world.link("r-a", a)
    world.link("r-b", b)
    world.link("r-b2", b)  # two map rooms on one calendar: one subscription

    live = wait_for(
        lambda: (subs := world.graph_subscriptions()) and set(subs) == {a, b} and subs,
        what="subscriptions for a and b",
    )
    for sub in live.values():
        assert sub["notificationUrl"] == f"{world.service_url}/graph/notifications/contoso"
        assert sub["lifecycleNotificationUrl"] == f"{world.service_url}/graph/lifecycle/contoso"
    health = wait_for(
        lambda: (
            (h := world.health())
            and all(h[m]["subscription_id"] == live[m]["id"] for m in (a, b))
            and h
        ),
        what="the service recorded the connector's rows",
    )
    assert {health[m]["state"] for m in (a, b)} == {"healthy"}

    world.link("r-c", c)
    world.unlink("r-a")
    wait_for(lambda: set(world.graph_subscriptions()) == {b, c}, what="a replaced by c")
    world.unlink("r-b")
    assert set(world.graph_subscriptions()) >= {b}  # r-b2 still links b
    health = wait_for(
        lambda: (h := world.health()) and set(h) == {b, c} and h[c]["subscription_id"] and h,
        what="health lists b and c",
    )
    assert health[c]["subscription_id"] == world.graph_subscriptions()[c]["id"]


def test_a_new_mailbox_id_for_a_room_resubscribes(world: World) -> None:
    old, new = world.rooms[0]["upn"], world.rooms[1]["upn"]
    world.link("lobby", old)
    first = wait_for(lambda: world.graph_subscriptions().get(old), what="old subscribed")
    world.link("lobby", new)  # the room's mailbox changed: old one gone, new one linked
    wait_for(lambda: set(world.graph_subscriptions()) == {new}, what="resubscribed to new")
    health = wait_for(
        lambda: (h := world.health()) and set(h) == {new} and h[new]["subscription_id"] and h,
        what="health follows the new mailbox",
    )
    assert health[new]["subscription_id"] != first["id"]


def test_health_is_for_the_tenants_reader_and_the_operator(world: World) -> None:
    world.link("r-a", world.rooms[0]["upn"])
    reader = {"Authorization": f"Bearer {world.read_token}"}
    own = world.admin.get("/v1/tenants/contoso/subscriptions", headers=reader)
    assert own.status_code == 200
    assert [row["mailbox"] for row in own.json()["calendars"]] == [world.rooms[0]["upn"]]
    assert world.admin.get("/v1/subscriptions", headers=reader).status_code == 403
    anonymous = {"Authorization": ""}
    assert (
        world.admin.get("/v1/tenants/contoso/subscriptions", headers=anonymous).status_code == 401
    )
    missing = world.admin.get("/v1/tenants/nobody/subscriptions")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    everyone = world.admin.get("/v1/subscriptions").json()
    assert sum(everyone["counts"].values()) == len(everyone["calendars"]) == 1
