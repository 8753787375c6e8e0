"""When the push reconciliation re-pushes each room's window (``README.md``, "Reconciliation").

Each mailbox has a bound: how long after its last pushed window it is pushed again.

- The long bound while the connector's subscriptions are listening: a change notification
  reached the connector within the long bound, its relay to the service is not failing, and
  its renewal loop is not failing. It is ``CONNECTOR_PUSH_RECONCILE_HEALTHY_S``, but never more
  than the tenant's staleness bound (which the service sends with its converge) less the short
  bound, so a quiet room never ages into ``unknown`` at the service, even when its
  notifications stopped without a word.
- The short bound (``CONNECTOR_PUSH_RECONCILE_S``) otherwise, and always while the service has
  not said its staleness bound.

A mailbox is pushed at the instants ``phase * bound + k * bound`` (seconds since the epoch), its
phase a stable hash of the mailbox in [0, 1): at the last such instant that leaves its last push
no older than the bound. Rooms pushed together (onboarded at once, or after the service was
unreachable) are thus pushed again spread evenly over the bound, not in a wave, and stay spread.
A window last pushed because of its room's change notification is pushed again one bound after
that push instead: a room that notifications keep pushing needs no reconciliation, and such
pushes come when the room's changes do, spread by themselves.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@functools.lru_cache(maxsize=65_536)
def phase(mailbox: str) -> float:
    """The mailbox's stable place in [0, 1) of its bound. Cached: the reconciliation asks for
    every subscribed mailbox's phase each second."""
    digest = hashlib.blake2b(mailbox.casefold().encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def next_push(last_pushed_at: datetime, *, bound_s: float, at: float) -> datetime:
    """The last instant of the grid (phase ``at`` of ``bound_s``) no later than
    ``last_pushed_at + bound_s``, counted in whole microseconds: a window pushed at its instant
    is next pushed exactly one bound later."""
    bound = round(bound_s * 1_000_000)
    latest = (last_pushed_at - _EPOCH) // _MICROSECOND + bound
    return _EPOCH + (latest - (latest - round(at * bound)) % bound) * _MICROSECOND


def due(last_pushed_at: datetime, *, bound_s: float, at: float, on_notice: bool) -> datetime:
    """When the window is pushed again: one bound after a push its change notification asked
    for (``on_notice``), else at its grid instant; either way no later than one bound after
    its last push."""
    if on_notice:
        return last_pushed_at + timedelta(seconds=bound_s)
    return next_push(last_pushed_at, bound_s=bound_s, at=at)


def long_bound_s(*, short_s: float, healthy_s: float, staleness_s: float | None) -> float:
    """``healthy_s``, but at most the staleness bound less the short bound, and never below the
    short bound; the short bound while the staleness bound is unknown."""
    if staleness_s is None:
        return short_s
    return max(short_s, min(healthy_s, staleness_s - short_s))
