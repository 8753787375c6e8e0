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


def test_good_signature_accepted_once(clock: FakeClock) -> None:
    headers = Signer(WEBHOOK_SECRET, clock).headers("GET", PATH, b"")
    verifier = Verifier(WEBHOOK_SECRET, clock)
    verifier.verify("GET", PATH, headers, b"")
    with pytest.raises(SignatureError, match="replay"):
        verifier.verify("GET", PATH, headers, b"")


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


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", PATH, b""),
        ("GET", PATH.replace("a1", "a2"), b""),
        ("GET", PATH, b"x"),
        ("GET", PATH.replace("2026-11-25", "2026-12-25"), b""),
    ],
)
def test_signature_covers_method_path_query_and_body(
    clock: FakeClock, method: str, path: str, body: bytes
) -> None:
    headers = Signer(WEBHOOK_SECRET, clock).headers("GET", PATH, b"")
    with pytest.raises(SignatureError, match="no matching signature"):
        Verifier(WEBHOOK_SECRET, clock).verify(method, path, headers, body)


def test_forged_secret_refused(clock: FakeClock) -> None:
    headers = Signer("whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB", clock).headers("GET", PATH, b"")
    with pytest.raises(SignatureError):
        Verifier(WEBHOOK_SECRET, clock).verify("GET", PATH, headers, b"")


@pytest.mark.parametrize("skew_s", [-301, 301])
def test_stale_or_future_refused(clock: FakeClock, skew_s: int) -> None:
    signer_clock = FakeClock(clock.now())
    signer_clock.advance(skew_s)
    headers = Signer(WEBHOOK_SECRET, signer_clock).headers("GET", PATH, b"")
    with pytest.raises(SignatureError, match="5-minute"):
        Verifier(WEBHOOK_SECRET, clock).verify("GET", PATH, headers, b"")


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


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"webhook-id": "a", "webhook-timestamp": "x", "webhook-signature": "v1,AAAA"},
        {"webhook-id": "a", "webhook-timestamp": "1", "webhook-signature": "garbage"},
        {
            "webhook-id": "a",
            "webhook-timestamp": "99999999999999999999",
            "webhook-signature": "v1,!!",
        },
    ],
)
def test_malformed_headers_refused_cleanly(clock: FakeClock, headers: dict[str, str]) -> None:
    with pytest.raises(SignatureError):
        Verifier(WEBHOOK_SECRET, clock).verify("GET", PATH, headers, b"")


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
