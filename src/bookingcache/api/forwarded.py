"""What the reverse proxies in front of the service say about a request.

A proxy appends what it saw to ``X-Forwarded-For`` (and sets ``X-Forwarded-Proto``). Only the
entries written by proxies the operator trusts mean anything: with ``trusted_proxy_hops`` = n
(``BOOKINGCACHE_TRUSTED_PROXY_HOPS``) that is the n-th entry from the right, what the outermost
trusted proxy saw; entries further left are the client's to write. With n = 0 no header counts.
"""

from __future__ import annotations

from starlette.types import Scope


def forwarded_entry(scope: Scope, header: bytes, trusted_proxy_hops: int) -> str | None:
    """The entry of ``header`` (lower case, e.g. ``b"x-forwarded-for"``) written by the
    outermost trusted proxy, or None when no proxy is trusted or the header has too few."""
    if trusted_proxy_hops <= 0:
        return None
    entries: list[str] = []
    for name, value in scope.get("headers", ()):
        if name == header:
            entries.extend(part.strip() for part in value.decode("latin-1").split(","))
    if len(entries) < trusted_proxy_hops:
        return None
    return entries[-trusted_proxy_hops] or None


def came_over_https(scope: Scope, trusted_proxy_hops: int) -> bool:
    """The request reached the service over https, or its outermost trusted proxy says it
    reached that proxy over https."""
    if scope.get("scheme") == "https":
        return True
    proto = forwarded_entry(scope, b"x-forwarded-proto", trusted_proxy_hops)
    return proto is not None and proto.lower() == "https"
