"""What goes wrong between the service, the connector and Graph is repaired without a human:
a mailbox Graph cannot subscribe is retried with backoff, a subscription the service lost track
of is adopted when its notifications arrive, and Alternative 2 converges to the relay."""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from pathlib import Path

import pytest

from graph_emulator.directory import Mailbox
from tests.support.waiting import wait_for

from .test_lifecycle import _book, _booked_starts, _subscribed
from .world import FAST, FAST_SYNC, TENANT, World, deployment

pytestmark = pytest.mark.slow


def test_a_mailbox_that_cannot_be_subscribed_is_retried_with_backoff(world: World) -> None:
    ghost = "ghost-room@contoso.example"
    fine = world.rooms[0]["upn"]
    world.link("ghost", ghost)
    world.link("fine", fine)
    failing = wait_for(
        lambda: (h := world.health()).get(ghost, {}).get("state") == "failing" and h,
        what="the unknown mailbox reported failing",
    )
    assert failing[ghost]["subscription_id"] is None
    assert failing[ghost]["last_error"]
    _subscribed(world, fine)  # the other mailbox is not held up
    # The mailbox appears in the directory: a retry (not a room change) subscribes it.
    world.emulator.state.directory.add(
        Mailbox(
            id=str(uuid.uuid4()),
            upn=ghost,
            display_name="Ghost room",
            is_room=True,
            time_zone="Europe/Berlin",
        )
    )
    sub = _subscribed(world, ghost)
    assert sub["notificationUrl"].endswith(f"/graph/notifications/{TENANT}")
    wait_for(lambda: world.health()[ghost]["state"] == "healthy", what="healthy", timeout_s=30)


def test_a_converge_that_failed_as_a_whole_is_retried_when_its_backoff_runs_out(
    world: World,
) -> None:
    # The connector cannot get a token: it answers the service's call with an error.
    assert world.control.post("/faults/token", json={"kind": "unavailable"}).status_code == 201
    mailbox = world.rooms[5]["upn"]
    world.link("r5", mailbox)
    wait_for(
        lambda: (world.health()[mailbox]["last_error"] or "").startswith("connector-error"),
        what="the failed converge recorded",
    )
    assert world.control.delete("/faults/token").status_code == 204
    # No room changes and the 6-hourly timer is far: the backoff's end retries it.
    _subscribed(world, mailbox)


def test_a_notification_from_an_unknown_subscription_reconverges(
    world: World, tmp_path: Path
) -> None:
    mailbox = world.rooms[4]["upn"]
    world.link("lost", mailbox)
    sub = _subscribed(world, mailbox)
    wait_for(lambda: world.health()[mailbox]["last_success_at"], what="first read")
    # The service loses track of the subscription (a restored backup, say).
    with sqlite3.connect(tmp_path / "service" / "bookingcache.db") as db:
        db.execute(
            "UPDATE subscriptions SET subscription_id = 'forgotten' WHERE mailbox = ?",
            (mailbox,),
        )
    start = _book(world, mailbox, 6)
    # Graph notifies under the subscription the service does not know: ignored, then adopted,
    # and the calendar read again so the change is not lost.
    wait_for(lambda: world.health()[mailbox]["subscription_id"] == sub["id"], what="adopted again")
    wait_for(lambda: start in _booked_starts(world, "lost"), what="the change is read")


def test_alternative_2_subscribes_the_connectors_relay(tmp_path: Path) -> None:
    with deployment(tmp_path, orchestration=FAST, sync=FAST_SYNC, alternative=2) as world:
        mailbox = world.rooms[5]["upn"]
        world.link("relayed", mailbox)
        sub = _subscribed(world, mailbox)
        assert sub["notificationUrl"] == f"{world.connector_url}/graph/notifications"
        assert sub["lifecycleNotificationUrl"] == f"{world.connector_url}/graph/lifecycle"
        wait_for(lambda: world.health()[mailbox]["last_success_at"], what="first read")
        start = _book(world, mailbox, 2)
        wait_for(lambda: start in _booked_starts(world, "relayed"), what="relayed change")
        health = world.health()[mailbox]
        assert health["last_notification_at"] is not None
        assert dt.datetime.fromisoformat(health["last_notification_at"]) > dt.datetime.now(
            dt.UTC
        ) - dt.timedelta(minutes=1)
