"""Errors of the intake, all under the service's one root (``bookingcache.errors``).

BookingCacheError
├── InvalidInput
│   ├── MalformedBody        400: not JSON, or not the shape of the call
│   ├── UnknownMailbox       422: the relay named calendars the tenant does not have
│   ├── UnsupportedMediaType 415: the body is not declared as JSON
│   └── BodyTooLarge         413: the body is over the size limit
├── Unauthorized
│   └── BadSignature         401: unsigned, stale, wrongly signed or replayed relay call
└── StoreUnavailable
    └── NotPersisted         503: the inbox commit failed (the sender retries)
"""

from __future__ import annotations

from collections.abc import Sequence

from bookingcache.errors import InvalidInput, StoreUnavailable, Unauthorized


class MalformedBody(InvalidInput):
    pass


class UnknownMailbox(InvalidInput):
    def __init__(self, mailboxes: Sequence[str]) -> None:
        shown = ", ".join(repr(m) for m in mailboxes[:20])
        more = f" and {len(mailboxes) - 20} more" if len(mailboxes) > 20 else ""
        super().__init__(f"no room of this tenant is linked to {shown}{more}")
        self.mailboxes = list(mailboxes)


class BadSignature(Unauthorized):
    pass


class NotPersisted(StoreUnavailable):
    pass


class UnsupportedMediaType(InvalidInput):
    """415: the body is not declared as JSON."""


class BodyTooLarge(InvalidInput):
    """413: the body is over the intake's size limit."""
