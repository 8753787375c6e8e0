"""The security headers of every answer, added in one place: ``ServiceApp`` wraps the ``send``
of each HTTP exchange before anything else runs, so Graph's webhook fast path, the router's 404
and 405, the body limit's 413 and the outermost 500 carry them as every other answer does.

An answer keeps a header it set itself (the API documentation pages set their own
``Content-Security-Policy``, see ``docs_pages``); the others are added:

- ``Content-Security-Policy: default-src 'none'; frame-ancestors 'none'``: the service answers
  JSON and text, never a page that should load anything or be framed;
- ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``,
  ``X-Frame-Options: DENY`` (for browsers without ``frame-ancestors``);
- ``Cross-Origin-Resource-Policy: same-origin``: another site cannot embed an answer as an image
  or script (cross-origin ``fetch`` is governed by CORS, ``BOOKINGCACHE_CORS_ORIGINS``);
- ``Cache-Control: no-store`` on the answer to a request that carried a credential
  (``Authorization`` or a Standard Webhooks signature), unless the answer set its own caching;
- ``Strict-Transport-Security: max-age=31536000`` only when the request came over https: uvicorn
  serving TLS itself, or the outermost of the proxies the service trusts
  (``BOOKINGCACHE_TRUSTED_PROXY_HOPS``, ``api.forwarded``) saying ``X-Forwarded-Proto: https``.
  Over plain http the header means nothing to a browser, and a service behind an untrusted hop
  must not claim what it cannot know.
"""

from __future__ import annotations

from starlette.types import Message, Scope, Send

from bookingcache.api.forwarded import came_over_https

JSON_POLICY = b"default-src 'none'; frame-ancestors 'none'"
HSTS = b"max-age=31536000"

ALWAYS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", JSON_POLICY),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
_CREDENTIALS = frozenset({b"authorization", b"webhook-signature"})
_NO_STORE = (b"cache-control", b"no-store")
_HSTS = (b"strict-transport-security", HSTS)
# What is added, by (over https, with a credential): built once, not per exchange.
_ADDED: dict[tuple[bool, bool], tuple[tuple[bytes, bytes], ...]] = {
    (https, credential): ALWAYS + ((_HSTS,) if https else ()) + ((_NO_STORE,) if credential else ())
    for https in (False, True)
    for credential in (False, True)
}
_NAMES = frozenset(name for name, _ in _ADDED[True, True])


def with_security_headers(scope: Scope, send: Send, *, trusted_proxy_hops: int = 0) -> Send:
    """``send`` adding the security headers to the exchange's answer."""
    credential = False
    for name, _ in scope.get("headers", ()):
        if name.lower() in _CREDENTIALS:
            credential = True
            break
    extra = _ADDED[came_over_https(scope, trusted_proxy_hops), credential]

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = message.get("headers", ())
            # Most answers set none of these headers themselves: then all are added as they are.
            own = {name.lower() for name, _ in headers} & _NAMES
            added = [(n, v) for n, v in extra if n not in own] if own else extra
            message = {**message, "headers": [*headers, *added]}
        await send(message)

    return send_with_headers
