"""Signing of service → connector calls: Standard Webhooks headers over the request line and
body (``"{METHOD} {path_with_query}\\n" + body``), HMAC-SHA256 with the tenant's ``whsec_``
secret (docs/architecture.md)."""

from __future__ import annotations

import datetime as dt
import uuid

import httpx
from standardwebhooks import Webhook


def signed_content(method: str, raw_path: bytes, body: bytes) -> bytes:
    return f"{method.upper()} {raw_path.decode('ascii')}\n".encode() + body


def sign_request(request: httpx.Request, *, secret: str, now: dt.datetime) -> None:
    """Add ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` to ``request``."""
    body = request.content
    content = signed_content(request.method, request.url.raw_path, body)
    message_id = f"msg_{uuid.uuid4().hex}"
    # standardwebhooks signs text; the content is the ASCII request line plus a UTF-8 body.
    signature = Webhook(secret).sign(
        msg_id=message_id, timestamp=now, data=content.decode("utf-8", errors="strict")
    )
    request.headers["webhook-id"] = message_id
    request.headers["webhook-timestamp"] = str(int(now.timestamp()))
    request.headers["webhook-signature"] = signature
