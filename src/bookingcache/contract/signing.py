"""The signature on every call of the service<->connector contract, in both directions: Standard
Webhooks headers (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``), HMAC-SHA256 with
the tenant's ``whsec_`` secret over ``"{METHOD} {path_with_query}\\n"`` followed by the body
(docs/architecture.md).

``sign_request`` signs the service's calls to the connector; ``SignatureVerifier`` checks the
relay's calls to the service. The timestamp must lie within 5 minutes of the injected clock. A
``webhook-id`` is reserved when its signature checks out and kept until its timestamp leaves the
window, so a replay of a good call is refused; a call that is then not accepted (bad body, failed
commit) releases its id, so the sender may retry it unchanged.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import uuid
from collections.abc import Mapping, Sequence

import httpx
from standardwebhooks import Webhook

from bookingcache.clock import Clock
from bookingcache.errors import BadSignature

TOLERANCE = dt.timedelta(minutes=5)
_PRUNE_EVERY = dt.timedelta(seconds=1)
MAX_ID_LENGTH = 256
# What a call hears when no signature matches, and also when its tenant is not known.
NO_MATCH = "no webhook-signature matches the call"
MAX_SIGNATURES = 16


def signed_content(method: str, path_with_query: str, body: bytes) -> str:
    """The text a signature covers; ``BadSignature`` when the body is not UTF-8 (nothing a
    conforming sender signs)."""
    try:
        return f"{method.upper()} {path_with_query}\n" + body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadSignature("the body is not UTF-8, so no signature can match it") from exc


def sign_request(request: httpx.Request, *, secrets: Sequence[str], now: dt.datetime) -> None:
    """Add ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` to ``request``: one
    signature per secret, space-separated as Standard Webhooks allows, so that during a
    signing-secret rotation a receiver that knows either secret accepts the call."""
    if not secrets:
        raise ValueError("signing needs at least one secret")
    content = signed_content(request.method, request.url.raw_path.decode("ascii"), request.content)
    message_id = f"msg_{uuid.uuid4().hex}"
    signatures = [
        Webhook(secret).sign(msg_id=message_id, timestamp=now, data=content) for secret in secrets
    ]
    request.headers["webhook-id"] = message_id
    request.headers["webhook-timestamp"] = str(int(now.timestamp()))
    request.headers["webhook-signature"] = " ".join(signatures)


def _candidates(header: str) -> list[bytes]:
    found: list[bytes] = []
    for part in header.split()[:MAX_SIGNATURES]:
        version, _, encoded = part.partition(",")
        if version != "v1" or not encoded:
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


class ReplayCache:
    """The ``webhook-id``s accepted inside the tolerance window, per tenant (this process)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], dt.datetime] = {}
        self._pruned_at: dt.datetime | None = None

    def reserve(
        self, tenant_id: str, message_id: str, *, sent_at: dt.datetime, now: dt.datetime
    ) -> bool:
        cutoff = now - TOLERANCE
        # Ids older than the window are dropped at most once a second: a pass goes over every
        # id kept, which at 100 calls a second is 30,000 of them. One older than the window
        # counts as unseen whether it is dropped yet or not.
        if len(self._seen) > 1024 and (
            self._pruned_at is None or now - self._pruned_at >= _PRUNE_EVERY
        ):
            self._pruned_at = now
            for key in [key for key, at in self._seen.items() if at < cutoff]:
                del self._seen[key]
        key = (tenant_id, message_id)
        previous = self._seen.get(key)
        if previous is not None and previous >= cutoff:
            return False
        self._seen[key] = sent_at
        return True

    def release(self, tenant_id: str, message_id: str) -> None:
        self._seen.pop((tenant_id, message_id), None)

    def __len__(self) -> int:
        return len(self._seen)


class SignatureVerifier:
    def __init__(self, *, clock: Clock, replays: ReplayCache | None = None) -> None:
        self._clock = clock
        self.replays = replays or ReplayCache()

    def verify(
        self,
        *,
        tenant_id: str,
        secrets: Sequence[str],
        method: str,
        path_with_query: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> str:
        """Check the call against each of ``secrets`` (a signature by any one of them will
        do); returns its ``webhook-id`` (now reserved) or raises ``BadSignature`` saying what
        was wrong."""
        message_id = headers.get("webhook-id", "")
        stamp = headers.get("webhook-timestamp", "")
        signatures = headers.get("webhook-signature", "")
        if not (message_id and stamp and signatures):
            raise BadSignature(
                "the call is not signed: webhook-id, webhook-timestamp and webhook-signature "
                "are required"
            )
        if len(message_id) > MAX_ID_LENGTH:
            raise BadSignature("webhook-id is too long")
        if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
            raise BadSignature("webhook-timestamp must be a Unix time in seconds")
        now = self._clock.now()
        # Compared as numbers first: a time far enough away is no date at all (year 33658).
        if abs(int(stamp) - now.timestamp()) > TOLERANCE.total_seconds():
            raise BadSignature("webhook-timestamp is more than 5 minutes away from now")
        sent_at = dt.datetime.fromtimestamp(int(stamp), tz=dt.UTC)
        content = signed_content(method, path_with_query, body)
        expected: list[bytes] = []
        for secret in secrets:
            try:
                webhook = Webhook(secret)
            except Exception as exc:  # the library rejects unusable secrets with its own errors
                raise BadSignature("the tenant has no usable signing secret") from exc
            signed = webhook.sign(msg_id=message_id, timestamp=sent_at, data=content)
            expected.append(base64.b64decode(signed.split(",", 1)[1]))
        matched = False
        for candidate in _candidates(signatures):
            for wanted in expected:
                matched |= hmac.compare_digest(wanted, candidate)
        if not matched:
            raise BadSignature(NO_MATCH)
        if not self.replays.reserve(tenant_id, message_id, sent_at=sent_at, now=now):
            raise BadSignature("this webhook-id was already accepted (replay)")
        return message_id

    def release(self, tenant_id: str, message_id: str) -> None:
        self.replays.release(tenant_id, message_id)
