"""The replay-guard port: a relay call's ``webhook-id`` accepted by any service process on the
database is refused by every other one while its timestamp is inside the signature window.
``store.sql.replays.SqlReplayGuard`` fills it."""

from __future__ import annotations

import datetime as dt
from typing import Protocol


class ReplayGuard(Protocol):
    async def claim(self, tenant_id: str, message_id: str, *, sent_at: dt.datetime) -> bool:
        """Record the id; False when another call with it was accepted inside the window."""
        ...

    async def release(self, tenant_id: str, message_id: str) -> None:
        """Forget the id of a call that was not accepted, so the sender may retry it."""
        ...
