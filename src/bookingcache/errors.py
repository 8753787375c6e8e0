"""The one exception tree of the service. Every error the service raises on purpose derives from
``BookingCacheError``; the HTTP layer maps each branch to a status in one place (api/problems.py).

    BookingCacheError
    ├── InvalidInput            400/422: the caller sent something wrong
    │   └── InvalidWindow       start after end, window too long, bad interval
    ├── NotFound                404: unknown tenant, room, calendar
    ├── Conflict                409: the request contradicts stored state
    ├── Unauthorized            401: missing or wrong token / signature
    ├── Forbidden               403: a valid token that may not do this
    ├── StoreUnavailable        503: the database could not be reached or written
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


class NotFound(BookingCacheError):
    pass


class Conflict(BookingCacheError):
    pass


class Unauthorized(BookingCacheError):
    pass


class Forbidden(BookingCacheError):
    pass


class StoreUnavailable(BookingCacheError):
    pass


class UpstreamError(BookingCacheError):
    pass


class Throttled(UpstreamError):
    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
