"""Stream tickets: short-lived, tenant-scoped credentials to open a change stream with, for
browsers, whose ``EventSource`` cannot send an ``Authorization`` header.

A ticket is issued to a caller that showed the tenant's read token (or the admin token) and says
nothing about that token: it is ``st1.<payload>.<mac>``, the payload naming the tenant, when the
tenant was created, when the ticket expires and a random nonce, the MAC an HMAC-SHA256 of it
under a key derived from the admin token. Every API process of a deployment shares the admin
token, so any of them accepts a ticket another issued, with no shared state and whatever way
read tokens are kept. A ticket is refused once expired, for another tenant, or once its tenant
was deleted (a tenant created again under the same id has another creation time); replacing the
admin token voids every ticket outstanding.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from bookingcache.clock import Clock
from bookingcache.domain.tenancy import Tenant
from bookingcache.errors import BadTicket, Forbidden

_PREFIX = "st1"
_KEY_LABEL = b"bookingcache stream tickets v1"
MAX_TICKET_LENGTH = 512


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Ticket:
    value: str
    expires_at: dt.datetime


@dataclass(frozen=True, slots=True)
class TicketClaims:
    tenant_id: str
    created_at: str
    expires_at: dt.datetime


class StreamTickets:
    def __init__(self, admin_token: str, clock: Clock, *, lifetime: dt.timedelta) -> None:
        self._key = hmac.new(admin_token.encode(), _KEY_LABEL, hashlib.sha256).digest()
        self._clock = clock
        self.lifetime = lifetime

    def issue(self, tenant: Tenant) -> Ticket:
        """A ticket to open one of ``tenant``'s streams within ``lifetime``."""
        expires = self._clock.now().replace(microsecond=0) + self.lifetime
        created = tenant.created_at.isoformat() if tenant.created_at else ""
        payload = "\n".join(
            (tenant.id, created, str(int(expires.timestamp())), secrets.token_urlsafe(12))
        ).encode()
        value = f"{_PREFIX}.{_b64(payload)}.{_b64(self._mac(payload))}"
        return Ticket(value=value, expires_at=expires)

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def check(self, value: str, tenant_id: str) -> TicketClaims:
        """The claims of a ticket this deployment issued and that has not expired, for
        ``tenant_id``; ``BadTicket`` otherwise (``Forbidden`` for a valid ticket of another
        tenant). Whether its tenant still exists is the caller's to check (``still_valid``)."""
        if len(value) > MAX_TICKET_LENGTH:
            raise BadTicket("the stream ticket is not valid")
        prefix, _, rest = value.partition(".")
        encoded, _, mac = rest.partition(".")
        try:
            payload = _unb64(encoded)
            presented = _unb64(mac)
        except (binascii.Error, ValueError):
            raise BadTicket("the stream ticket is not valid") from None
        if prefix != _PREFIX or not hmac.compare_digest(presented, self._mac(payload)):
            raise BadTicket("the stream ticket is not valid")
        try:
            claimed, created, expires_text, _nonce = payload.decode().split("\n")
            expires = dt.datetime.fromtimestamp(int(expires_text), dt.UTC)
        except (UnicodeDecodeError, ValueError, OverflowError, OSError):
            raise BadTicket("the stream ticket is not valid") from None
        if not self._clock.now() < expires:
            raise BadTicket("the stream ticket has expired; ask for a new one")
        if claimed != tenant_id:
            raise Forbidden(f"this stream ticket belongs to another tenant, not {tenant_id!r}")
        return TicketClaims(tenant_id=claimed, created_at=created, expires_at=expires)

    @staticmethod
    def still_valid(claims: TicketClaims, tenant: Tenant) -> None:
        """``BadTicket`` unless the tenant is the one the ticket was issued for (not deleted
        and created again under its id)."""
        created = tenant.created_at.isoformat() if tenant.created_at else ""
        if not hmac.compare_digest(created.encode(), claims.created_at.encode()):
            raise BadTicket("the stream ticket is not valid")
