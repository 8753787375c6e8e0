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
    │   ├── BadSignature        401: an unsigned, stale, wrongly signed or replayed signed call
    │   └── BadTicket           401: a stream ticket that is malformed, expired or void
    ├── Forbidden               403: a valid token that may not do this
    ├── TooManyFailedAttempts   429: failed authentication over its budget, with Retry-After
    ├── StoreUnavailable        503: the database could not be reached or written
    │   ├── NotPersisted        503: accepted notifications could not be stored (sender retries)
    │   └── SecretsUnreadable   503: stored secrets do not open with the configured keys
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


class BadTicket(Unauthorized):
    pass


class Forbidden(BookingCacheError):
    pass


class TooManyFailedAttempts(BookingCacheError):
    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StoreUnavailable(BookingCacheError):
    pass


class NotPersisted(StoreUnavailable):
    pass


class SecretsUnreadable(StoreUnavailable):
    """A sealed secret in the database does not open with any configured key (a wrong or
    missing ``BOOKINGCACHE_SECRETS_KEY``), or a value that should be sealed is not."""


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


# The classes of failure a calendar's health may show (``last_error``), with what they mean.
# An upstream's HTTP status may follow a class: ``connector-error (HTTP 500)``.
ERROR_CLASSES: dict[str, str] = {
    "connector-not-configured": "the tenant has no connector URL",
    "connector-unreachable": "the connector could not be connected to",
    "connector-timeout": "the connector did not answer in time",
    "connector-refused-auth": "the connector refused the signed call (401, 403)",
    "connector-throttled": "the connector asked to slow down (429, 503)",
    "connector-error": "the connector answered another unexpected status (5xx, 4xx)",
    "connector-bad-answer": "the connector's answer was unreadable or not the one asked for",
    "url-not-allowed": "the connector URL, an address its host resolves to, or a notification "
    "URL is refused by the outbound rules (https and public hosts outside development)",
    "subscription-failed": "the connector could not create or renew the calendar's subscription "
    "at Graph",
    "subscription-expired": "the subscription has expired",
    "renewal-requested": "Graph asked for the subscription to be reauthorized",
    "recreation-requested": "Graph removed the subscription and it must be made again",
    "graph-not-configured": "no Graph app is configured for the tenant",
    "graph-unreachable": "Graph or its authority could not be connected to",
    "graph-timeout": "Graph did not answer in time",
    "graph-refused-auth": "Graph or its authority refused the service's app (401, 403)",
    "graph-throttled": "Graph asked to slow down (429, 503)",
    "graph-error": "Graph answered another unexpected status",
    "graph-bad-answer": "Graph's answer was unreadable",
    "upstream-error": "another failure of the connector or Graph",
    "not-found": "the tenant or calendar is gone",
    "store-unavailable": "the service's database could not be reached",
    "internal-error": "a fault of the service (its log has the detail)",
}
SUBSCRIPTION_FAILED = "subscription-failed"
CONNECTOR_NOT_CONFIGURED = "connector-not-configured"


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
