"""Signing a call of the service<->connector contract as the connector does, with the
Standard Webhooks library itself (not the service's own signing code)."""

from __future__ import annotations

import datetime as dt
import uuid

from standardwebhooks import Webhook


def sign(
    secret: str,
    method: str,
    target: str,
    body: bytes,
    *,
    at: dt.datetime,
    msg_id: str | None = None,
) -> dict[str, str]:
    """Standard Webhooks headers over ``"{METHOD} {target}\\n" + body`` (the contract)."""
    message_id = msg_id or f"msg_{uuid.uuid4().hex}"
    content = f"{method} {target}\n".encode() + body
    signature = Webhook(secret).sign(msg_id=message_id, timestamp=at, data=content.decode())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }
