"""The one exception tree of the service. Every error the service raises on purpose derives from
``BookingCacheError``; the HTTP layer maps each branch to a status in one place (api/problems.py).

    BookingCacheError
    ├── InvalidInput            422: the caller sent something wrong
    │   ├── InvalidWindow       422: start after end, window too long, bad interval
    │   ├── MalformedBody       400: not JSON, or not the shape of the call
    │   ├── UnsupportedMediaType 415: the body is not declared as JSON
    │   └── BodyTooLarge        413: the body is over the size limit
    ├── NotFound                404: unknown tenant, room, calendar
    ├── Conflict                409: the request contradicts stored state
    ├── Unauthorized            401: missing or wrong token
    │   └── BadSignature        401: an unsigned, stale, wrongly signed or replayed signed call
    ├── Forbidden               403: a valid token that may not do this
    ├── StoreUnavailable        503: the database could not be reached or written
    │   └── NotPersisted        503: accepted notifications could not be stored (sender retries)
    └── UpstreamError           502/503: Graph or the connector failed
        └── Throttled           429/503 upstream with Retry-After
"""

from __future__ import annotations


class BookingCacheError(Exception):
    """Root of every error the service raises on purpose."""


class InvalidInput(BookingCacheError):
    pass


class InvalidWindow(InvalidInput):
    pass


class MalformedBody(InvalidInput):
    pass


class UnsupportedMediaType(InvalidInput):
    pass


class BodyTooLarge(InvalidInput):
    pass


class NotFound(BookingCacheError):
    pass


class Conflict(BookingCacheError):
    pass


class Unauthorized(BookingCacheError):
    pass


class BadSignature(Unauthorized):
    pass


class Forbidden(BookingCacheError):
    pass


class StoreUnavailable(BookingCacheError):
    pass


class NotPersisted(StoreUnavailable):
    pass


class UpstreamError(BookingCacheError):
    pass


class Throttled(UpstreamError):
    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
