"""Errors of the intake, all under the service's one root (``bookingcache.errors``).

BookingCacheError
├── InvalidInput
│   ├── MalformedBody        400: not JSON, or not the shape of the call
│   ├── UnsupportedMediaType 415: the body is not declared as JSON
│   └── BodyTooLarge         413: the body is over the size limit
├── Unauthorized
│   └── BadSignature         401: unsigned, stale, wrongly signed or replayed relay call
└── StoreUnavailable
    └── NotPersisted         503: the inbox commit failed (the sender retries)
"""

from __future__ import annotations

from bookingcache.errors import InvalidInput, StoreUnavailable, Unauthorized


class MalformedBody(InvalidInput):
    pass


class BadSignature(Unauthorized):
    pass


class NotPersisted(StoreUnavailable):
    pass


class UnsupportedMediaType(InvalidInput):
    """415: the body is not declared as JSON."""


class BodyTooLarge(InvalidInput):
    """413: the body is over the intake's size limit."""
