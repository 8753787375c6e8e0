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

An ``UpstreamError`` carries a ``kind``, the stable class of the failure (``connector-error``,
``graph-timeout``, ``url-not-allowed``...), and the upstream's HTTP status if there was one.
Those two, and never the message (which may quote what the upstream sent), are what tenants see
of a failure (``public_error``); the message is for the service's log.
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
    default_kind = "upstream-error"

    def __init__(self, message: str, *, kind: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind or self.default_kind
        self.status = status

    @property
    def public(self) -> str:
        """The class of the failure and the upstream's status: what a tenant may see."""
        return self.kind if self.status is None else f"{self.kind} (HTTP {self.status})"


class Throttled(UpstreamError):
    default_kind = "throttled"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        kind: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, kind=kind, status=status)
        self.retry_after_s = retry_after_s


def public_error(exc: BaseException) -> str:
    """What a tenant may be shown of ``exc``: a stable class and at most an HTTP status, never
    text an upstream sent."""
    if isinstance(exc, UpstreamError):
        return exc.public
    if isinstance(exc, NotFound):
        return "not-found"
    if isinstance(exc, StoreUnavailable):
        return "store-unavailable"
    return "internal-error"
