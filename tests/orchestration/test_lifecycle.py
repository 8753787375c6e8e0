"""Subscriptions that Graph expires, removes or silences are repaired without a human, and a
clientState rotation loses no notification."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from tests.support.waiting import wait_for

from .world import FAST, FAST_SYNC, TENANT, World, deployment

pytestmark = pytest.mark.slow


def _book(world: World, mailbox: str, hours_ahead: float, minutes: int = 30) -> str:
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours_ahead)).replace(microsecond=0)
    answer = world.control.post(
        f"/mailboxes/{mailbox}/bookings",
        json={
            "organizer": _organizer(world),
            "start": start.isoformat().replace("+00:00", "Z"),
            "end": (start + dt.timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z"),
            "subject": "Review",
        },
    )
    assert answer.status_code in (200, 201), answer.text
    return start.isoformat().replace("+00:00", "Z")


def _organizer(world: World) -> str:
    people = [m for m in world.emulator.state.directory.all() if not m.is_room]
    return people[0].upn


def _booked_starts(world: World, room: str) -> set[str]:
    """The starts of the room's cached events over the next two days. (Busy intervals would
    not do: a booking overlapping another event merges into that event's interval.)"""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    answer = world.admin.get(
        f"/v1/tenants/{TENANT}/rooms/{room}/events",
        params={
            "start": now.isoformat(),
            "end": (now + dt.timedelta(days=2)).isoformat(),
        },
    )
    assert answer.status_code == 200, answer.text
    return {
        dt.datetime.fromisoformat(event["start"])
        .astimezone(dt.UTC)
        .isoformat()
        .replace("+00:00", "Z")
        for event in answer.json()["events"]
    }


def _subscribed(world: World, mailbox: str) -> dict[str, Any]:
    sub: dict[str, Any] = wait_for(
        lambda: world.graph_subscriptions().get(mailbox), what=f"{mailbox} subscribed"
    )
    wait_for(
        lambda: world.health().get(mailbox, {}).get("subscription_id") == sub["id"],
        what="the service recorded it",
    )
    return sub


def test_a_removed_subscription_is_recreated(world: World) -> None:
    mailbox = world.rooms[0]["upn"]
    world.link("r1", mailbox)
    first = _subscribed(world, mailbox)
    assert world.control.delete(f"/subscriptions/{first['id']}").status_code == 204
    # subscriptionRemoved reaches the service's lifecycle URL; the timer re-converges.
    again = wait_for(
        lambda: (s := world.graph_subscriptions().get(mailbox)) and s["id"] != first["id"] and s,
        what="a new subscription",
    )
    wait_for(
        lambda: world.health()[mailbox]["subscription_id"] == again["id"],
        what="the service knows the new subscription",
    )
    assert world.health()[mailbox]["state"] == "healthy"


def test_a_subscription_expired_at_graph_is_recreated(tmp_path: Path) -> None:
    settings = FAST.model_copy(update={"reconverge_every_s": 1.0})
    with deployment(tmp_path, orchestration=settings, sync=FAST_SYNC) as world:
        mailbox = world.rooms[1]["upn"]
        world.link("r1", mailbox)
        first = _subscribed(world, mailbox)
        sub = world.hub.by_id[first["id"]]
        sub.expiration = world.emulator.state.clock.now() - dt.timedelta(seconds=1)
        again = wait_for(
            lambda: (s := world.graph_subscriptions().get(mailbox)) and s,
            what="a live subscription again",
        )
        assert again["id"] != first["id"]
        wait_for(
            lambda: world.health()[mailbox]["subscription_id"] == again["id"],
            what="the service knows the new subscription",
        )


def test_a_silenced_subscription_is_detected_and_the_calendar_stays_fresh(
    tmp_path: Path,
) -> None:
    # The subscription looks listening until its silence is found: both bounds are short.
    sweeping = FAST_SYNC.model_copy(
        update={"sweep_bound_s": 1, "sweep_healthy_bound_s": 1, "sweep_interval_s": 0.3}
    )
    with deployment(tmp_path, orchestration=FAST, sync=sweeping) as world:
        mailbox = world.rooms[2]["upn"]
        world.link("quiet", mailbox)
        sub = _subscribed(world, mailbox)
        wait_for(lambda: world.health()[mailbox]["last_success_at"], what="first read")
        assert world.control.post(f"/subscriptions/{sub['id']}/silence").status_code == 204
        booked = []
        for hours in (3, 5, 7):
            booked.append(_book(world, mailbox, hours))
            # Nothing announces it: reconciliation reads it within its bound.
            wait_for(lambda: booked[-1] in _booked_starts(world, "quiet"), what="swept in")
        health = wait_for(
            lambda: (h := world.health()[mailbox])["state"] == "silent" and h,
            what="silent",
        )
        assert health["unannounced_changes"] >= 2
        service_wide = world.admin.get("/v1/subscriptions").json()  # publishes the gauges
        assert service_wide["counts"]["silent"] == 1
        metrics = world.admin.get("/metrics").text
        assert 'bookingcache_subscription_calendars{state="silent"} 1.0' in metrics
        # Notifications come back: the next change is announced and the calendar is healthy.
        assert world.control.delete(f"/subscriptions/{sub['id']}/silence").status_code == 204
        latest = _book(world, mailbox, 9)
        wait_for(lambda: latest in _booked_starts(world, "quiet"), what="notified change")
        wait_for(lambda: world.health()[mailbox]["state"] == "healthy", what="healthy again")
        wait_for(lambda: _lag_count(world) >= 1, what="the notified change's lag observed")


def test_client_state_rotation_loses_no_notification(world: World) -> None:
    mailbox = world.rooms[3]["upn"]
    world.link("rot", mailbox)
    first = _subscribed(world, mailbox)
    old_state = world.hub.by_id[first["id"]].client_state
    during = _book(world, mailbox, 3)  # its notification may race the rotation
    rotated = world.admin.post(f"/v1/tenants/{TENANT}/subscriptions:rotate-client-state")
    assert rotated.status_code == 200, rotated.text
    [row] = rotated.json()["subscriptions"]
    assert row["status"] in {"recreated", "created"}, row
    new = world.hub.by_id[row["subscription_id"]]
    assert new.client_state != old_state
    wait_for(lambda: world.health()[mailbox]["subscription_id"] == new.id, what="new subscription")
    # A notification Graph queued under the old secret still counts during the grace period.
    before = _accepted(world)
    late = {
        "value": [
            {
                "subscriptionId": new.id,
                "clientState": old_state,
                "changeType": "updated",
                "resource": f"Users/{mailbox}/Events/AAMk-late",
                "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
                "tenantId": world.emulator.state.tenant_id,
            }
        ]
    }
    answer = world.admin.post(f"/graph/notifications/{TENANT}", json=late)
    assert answer.status_code == 202, answer.text
    assert _accepted(world) == before + 1
    # And changes made after the rotation arrive under the new secret.
    start = _book(world, mailbox, 4)
    wait_for(lambda: start in _booked_starts(world, "rot"), what="booked after rotation")
    assert during in _booked_starts(world, "rot")
    assert world.health()[mailbox]["last_notification_at"] is not None


def _accepted(world: World) -> float:
    total = 0.0
    for line in world.admin.get("/metrics").text.splitlines():
        if line.startswith("bookingcache_intake_accepted_notifications_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("left", [dt.timedelta(hours=2), dt.timedelta(days=5)], ids=str)
def test_reauthorization_required_renews_the_subscription(world: World, left: dt.timedelta) -> None:
    mailbox = world.rooms[6]["upn"]
    world.link("r6", mailbox)
    first = _subscribed(world, mailbox)
    # Graph asks for reauthorization; only a renewal (PATCH) answers it, whether the
    # subscription is close to its end or not (the connector renews by itself only then).
    now = world.emulator.state.clock.now()
    world.hub.by_id[first["id"]].expiration = now + left
    answer = world.control.post(
        f"/subscriptions/{first['id']}/lifecycle", json={"event": "reauthorizationRequired"}
    )
    assert answer.status_code == 204, answer.text
    renewed = wait_for(
        lambda: (
            (s := world.graph_subscriptions()[mailbox])
            and dt.datetime.fromisoformat(s["expirationDateTime"]) > now + dt.timedelta(days=6)
            and s
        ),
        what="renewed at Graph",
    )
    assert renewed["id"] == first["id"]
    # The service records the expiry Graph holds and settles the mark. A converge that began
    # before the mark may renew a subscription two hours from its end by itself and record
    # that expiry first, keeping the mark (it could not have answered it); the converge the
    # mark asked for then renews once more and settles it.

    def settled() -> dict[str, Any] | None:
        health = world.health()[mailbox]
        at_graph = world.graph_subscriptions()[mailbox]
        recorded = health["expires_at"] and dt.datetime.fromisoformat(health["expires_at"])
        expiry = dt.datetime.fromisoformat(at_graph["expirationDateTime"])
        return health if health["state"] == "healthy" and recorded == expiry else None

    health = wait_for(settled, what="the renewal recorded and the mark settled")
    assert health["subscription_id"] == first["id"]
    assert health["last_error"] is None, health


def _lag_count(world: World) -> float:
    for line in world.admin.get("/metrics").text.splitlines():
        if line.startswith("bookingcache_notification_lag_seconds_count"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
