"""The contract signature, both ways: Standard Webhooks over ``METHOD path?query\\n`` + body.

Signing the method and the path with its query means a GET (no body) is covered as well as a POST,
and a signed call cannot be replayed against another URL. Verification uses the injected clock for
the 5-minute window and remembers every ``webhook-id`` it accepted within that window, so a replay
of a good call is refused too: in memory (``CallMemory``), or, as the connector runs it, in the
state directory (``store.StoredCalls``), so that a restarted connector, or another process on the
same directory, still refuses it.

The secret may be several, comma-separated (``whsec_new,whsec_old``), while the service rotates
the tenant's signing secret: calls are then signed with each (Standard Webhooks allows several
signatures in one header) and a call signed with any of them is accepted.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Protocol

from standardwebhooks import Webhook

from .clock import Clock
from .errors import SignatureError


def signed_content(method: str, path_with_query: str, body: bytes) -> str:
    return (f"{method.upper()} {path_with_query}\n".encode() + body).decode("utf-8")


def path_with_query(path: str, query: str) -> str:
    return f"{path}?{query}" if query else path


def split_secrets(secret: str) -> list[str]:
    """The secrets of a (possibly comma-separated) webhook secret setting."""
    return [part.strip() for part in secret.split(",") if part.strip()]


class Signer:
    def __init__(self, secret: str, clock: Clock) -> None:
        self._webhooks = [Webhook(part) for part in split_secrets(secret)]
        self._clock = clock

    def headers(self, method: str, path_and_query: str, body: bytes) -> dict[str, str]:
        msg_id = f"msg_{secrets.token_urlsafe(18)}"
        now = self._clock.now()
        content = signed_content(method, path_and_query, body)
        signatures = [
            webhook.sign(msg_id=msg_id, timestamp=now, data=content) for webhook in self._webhooks
        ]
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": " ".join(signatures),
        }


class SeenCalls(Protocol):
    def claim(self, webhook_id: str, sent_at: datetime, *, forget_before: datetime) -> bool:
        """Record ``webhook_id`` as accepted; False if it was already (a replay). Ids of calls
        sent before ``forget_before`` may be forgotten (their window is over)."""
        ...


class CallMemory:
    """``SeenCalls`` in this process's memory."""

    def __init__(self) -> None:
        self._seen: dict[str, datetime] = {}

    def claim(self, webhook_id: str, sent_at: datetime, *, forget_before: datetime) -> bool:
        for old in [k for k, at in self._seen.items() if at < forget_before]:
            del self._seen[old]
        if webhook_id in self._seen:
            return False
        self._seen[webhook_id] = sent_at
        return True


class Verifier:
    def __init__(
        self,
        secret: str,
        clock: Clock,
        *,
        tolerance_s: int = 300,
        seen: SeenCalls | None = None,
    ) -> None:
        self._webhooks = [Webhook(part) for part in split_secrets(secret)]
        self._clock = clock
        self._tolerance = timedelta(seconds=tolerance_s)
        self._seen: SeenCalls = seen if seen is not None else CallMemory()

    def verify(
        self, method: str, path_and_query: str, headers: Mapping[str, str], body: bytes
    ) -> None:
        """Raise :class:`SignatureError` unless the call is fresh, correctly signed and new."""
        lowered = {k.lower(): v for k, v in headers.items()}
        msg_id = lowered.get("webhook-id", "")
        stamp = lowered.get("webhook-timestamp", "")
        signatures = lowered.get("webhook-signature", "")
        if not (msg_id and stamp and signatures):
            raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
        try:
            sent_at = datetime.fromtimestamp(int(stamp), tz=self._clock.now().tzinfo)
        except (ValueError, OverflowError, OSError) as exc:
            raise SignatureError("webhook-timestamp is not a Unix time in seconds") from exc
        now = self._clock.now()
        if abs(now - sent_at) > self._tolerance:
            raise SignatureError("webhook-timestamp is outside the 5-minute window")
        try:
            content = signed_content(method, path_and_query, body)
        except UnicodeDecodeError as exc:
            raise SignatureError("body is not UTF-8") from exc
        expected = [
            _signature_bytes(webhook.sign(msg_id=msg_id, timestamp=sent_at, data=content))
            for webhook in self._webhooks
        ]
        if not any(
            hmac.compare_digest(wanted, candidate)
            for candidate in _candidates(signatures)
            for wanted in expected
        ):
            raise SignatureError("no matching signature")
        if not self._seen.claim(msg_id, sent_at, forget_before=now - self._tolerance):
            raise SignatureError("webhook-id already used (replay)")


def _signature_bytes(versioned: str) -> bytes:
    return base64.b64decode(versioned.split(",", 1)[1])


def _candidates(header: str) -> list[bytes]:
    found: list[bytes] = []
    for part in header.split():
        version, _, encoded = part.partition(",")
        if version != "v1" or not encoded:
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found
