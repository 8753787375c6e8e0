"""When the reconciliation sweep reads each calendar (``docs/sync.md``, "The reconciliation sweep").

A calendar's bound is how old its last successful refresh may grow before the sweep reads it.

Each calendar is read on a grid of its own: the instants ``phase * bound + k * bound`` (seconds
since the epoch), where the phase is a stable hash of the calendar in [0, 1). The sweep reads
it at the last grid instant that leaves its last success no older than the bound. Calendars
refreshed together (a tenant onboarded at once) are thus read at instants spread evenly over
the bound, and stay spread: each is read once per bound at its own instant, whatever the others
do.
"""

from __future__ import annotations

import datetime as dt
import hashlib

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def phase(tenant_id: str, mailbox: str) -> float:
    """The calendar's stable place in [0, 1) of its bound (the same in every process)."""
    digest = hashlib.blake2b(f"{tenant_id}\n{mailbox.casefold()}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2**64


def next_read(last_success_at: dt.datetime, *, bound_s: float, at: float) -> dt.datetime:
    """The last instant of the calendar's grid (phase ``at`` of ``bound_s``) no later than
    ``last_success_at + bound_s``: in ``(last_success_at, last_success_at + bound_s]``.
    Counted in whole microseconds, so that a calendar read at its instant is next read exactly
    one bound later."""
    bound = round(bound_s * 1_000_000)
    latest = (last_success_at - _EPOCH) // _MICROSECOND + bound
    instant = latest - (latest - round(at * bound)) % bound
    return _EPOCH + instant * _MICROSECOND
