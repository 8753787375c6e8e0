"""The audit log port: every admin change, who made it (a fingerprint of the admin credential,
never the credential), what it was, when, and from which client address. Entries never hold a
secret value: the callers put only names of what changed and values that are no secret.
``store.sql.audit.SqlAuditLog`` fills it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One admin change, as the API records it."""

    actor: str
    action: str
    client: str | None = None
    tenant_id: str | None = None
    target: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One admin change, as stored: its place in the log and when it was recorded."""

    id: int
    at: dt.datetime
    record: AuditRecord


class AuditLog(Protocol):
    async def record(self, record: AuditRecord) -> AuditEntry:
        """Append ``record`` at the clock's now."""
        ...

    async def entries(
        self, *, tenant_id: str | None = None, before: int | None = None, limit: int = 100
    ) -> Sequence[AuditEntry]:
        """The newest entries first (of one tenant when given), those older than the entry
        ``before`` when given, at most ``limit``."""
        ...
