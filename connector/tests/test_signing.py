"""What is particular to the signature code: it interoperates with the Standard Webhooks
library both ways, and its memory of accepted calls refuses replays across a restart and forgets
only what is stale anyway. The refusals of calls not signed for this call, now, for the first
time are the matrix in test_signed_calls.py."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from bookingcache_connector.errors import SignatureError
from bookingcache_connector.signing import (
    CallMemory,
    SeenCalls,
    Signer,
    Verifier,
    signed_content,
)
from bookingcache_connector.store import StoredCalls

from .conftest import WEBHOOK_SECRET
from .fakes import FakeClock

PATH = (
    "/v1/calendars/room-a1@contoso.example/events"
    "?start=2026-11-24T00:00:00Z&end=2026-11-25T00:00:00Z"
)


def test_interoperates_with_the_standardwebhooks_library(clock: FakeClock) -> None:
    body = b'{"changes": []}'
    headers = Signer(WEBHOOK_SECRET, FakeClock()).headers(
        "POST", "/v1/tenants/t/notifications", body
    )
    content = signed_content("POST", "/v1/tenants/t/notifications", body)
    Webhook(WEBHOOK_SECRET).verify(content, headers, json_parse=False)  # raises if wrong
    theirs = Webhook(WEBHOOK_SECRET)
    msg_id = "msg_from_the_service"
    signature = theirs.sign(msg_id, clock.now(), signed_content("PUT", "/v1/subscriptions", body))
    Verifier(WEBHOOK_SECRET, clock).verify(
        "PUT",
        "/v1/subscriptions",
        {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(clock.now().timestamp())),
            "webhook-signature": signature,
        },
        body,
    )


@pytest.fixture(params=["memory", "state directory"])
def seen(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SeenCalls]:
    if request.param == "memory":
        yield CallMemory()
        return
    stored = StoredCalls.in_directory(tmp_path)
    yield stored
    stored.close()


def test_replay_window_forgets_only_what_is_stale_anyway(clock: FakeClock, seen: SeenCalls) -> None:
    verifier = Verifier(WEBHOOK_SECRET, clock, seen=seen)
    old = Signer(WEBHOOK_SECRET, clock).headers("GET", PATH, b"")
    verifier.verify("GET", PATH, old, b"")
    clock.advance(200)
    with pytest.raises(SignatureError, match="replay"):
        verifier.verify("GET", PATH, old, b"")
    clock.advance(200)
    with pytest.raises(SignatureError, match="5-minute"):
        verifier.verify("GET", PATH, old, b"")


def test_a_replay_is_refused_after_a_restart_on_the_same_state_directory(
    clock: FakeClock, tmp_path: Path
) -> None:
    headers = Signer(WEBHOOK_SECRET, clock).headers("GET", PATH, b"")
    first = StoredCalls.in_directory(tmp_path)
    Verifier(WEBHOOK_SECRET, clock, seen=first).verify("GET", PATH, headers, b"")
    first.close()

    # A new process on the same directory (a restart, or a second instance).
    second = StoredCalls.in_directory(tmp_path)
    try:
        verifier = Verifier(WEBHOOK_SECRET, clock, seen=second)
        with pytest.raises(SignatureError, match="replay"):
            verifier.verify("GET", PATH, headers, b"")
        # Another call is accepted, once.
        other = Signer(WEBHOOK_SECRET, clock).headers("GET", PATH, b"")
        verifier.verify("GET", PATH, other, b"")
        with pytest.raises(SignatureError, match="replay"):
            verifier.verify("GET", PATH, other, b"")
    finally:
        second.close()


def test_stored_calls_delete_ids_whose_window_is_over(clock: FakeClock, tmp_path: Path) -> None:
    seen = StoredCalls.in_directory(tmp_path)
    try:
        start = clock.now()
        window = timedelta(seconds=300)
        assert seen.claim("msg_a", start, forget_before=start - window)
        later = start + timedelta(seconds=400)
        assert seen.claim("msg_b", later, forget_before=later - window)
        with sqlite3.connect(tmp_path / "seen-calls.sqlite3") as db:
            kept = [row[0] for row in db.execute("SELECT webhook_id FROM seen_calls")]
        assert kept == ["msg_b"]  # the table does not grow with every call ever made
    finally:
        seen.close()
