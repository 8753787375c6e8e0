"""The contract signature, both ways: Standard Webhooks over ``METHOD path?query\\n`` + body.

Signing the method and the path with its query means a GET (no body) is covered as well as a POST,
and a signed call cannot be replayed against another URL. Verification uses the injected clock for
the 5-minute window and remembers every ``webhook-id`` it accepted within that window, so a replay
of a good call is refused too.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta

from standardwebhooks import Webhook

from .clock import Clock
from .errors import SignatureError


def signed_content(method: str, path_with_query: str, body: bytes) -> str:
    return (f"{method.upper()} {path_with_query}\n".encode() + body).decode("utf-8")


def path_with_query(path: str, query: str) -> str:
    return f"{path}?{query}" if query else path


class Signer:
    def __init__(self, secret: str, clock: Clock) -> None:
        self._webhook = Webhook(secret)
        self._clock = clock

    def headers(self, method: str, path_and_query: str, body: bytes) -> dict[str, str]:
        msg_id = f"msg_{secrets.token_urlsafe(18)}"
        now = self._clock.now()
        signature = self._webhook.sign(
            msg_id=msg_id, timestamp=now, data=signed_content(method, path_and_query, body)
        )
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }


class Verifier:
    def __init__(self, secret: str, clock: Clock, *, tolerance_s: int = 300) -> None:
        self._webhook = Webhook(secret)
        self._clock = clock
        self._tolerance = timedelta(seconds=tolerance_s)
        self._seen: dict[str, datetime] = {}

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
        expected = _signature_bytes(
            self._webhook.sign(msg_id=msg_id, timestamp=sent_at, data=content)
        )
        if not any(
            hmac.compare_digest(expected, candidate) for candidate in _candidates(signatures)
        ):
            raise SignatureError("no matching signature")
        self._forget_older_than(now - self._tolerance)
        if msg_id in self._seen:
            raise SignatureError("webhook-id already used (replay)")
        self._seen[msg_id] = sent_at

    def _forget_older_than(self, cutoff: datetime) -> None:
        for old in [k for k, at in self._seen.items() if at < cutoff]:
            del self._seen[old]


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
