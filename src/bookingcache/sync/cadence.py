"""When the reconciliation sweep reads each calendar (``docs/sync.md``, "The reconciliation sweep").

A calendar's bound is how old its last successful refresh may grow before the sweep reads it:

- the long bound, for a calendar whose subscription is *listening*: one that exists and is
  neither failing nor removed nor marked for action, outlives the long bound, and was heard
  from (the silence duty's judgement that the last change it saw was announced; or, for a
  calendar the duty has not judged yet, a notification to its tenant within the long bound);
  and whose refreshes succeed. A calendar the duty never judged is one whose reads never found
  a change: an empty room, whose own subscription has had nothing to announce. Its tenant's
  notifications show that the way in (endpoint, clientState, Graph's deliveries) works. The
  long bound is the ``healthy`` setting, but never more than the tenant's staleness bound less
  the short bound, so a quiet calendar never shows as stale, and one whose notifications
  stopped without a word is still re-read within the tenant's bound;
- the short bound for every other calendar: no subscription, a failing one, a silent one, and
  one with a change the silence duty found unannounced (one more and it is silent; the short
  bound finds it sooner).

Each calendar is read on a grid of its own: the instants ``phase * bound + k * bound`` (seconds
since the epoch), where the phase is a stable hash of the calendar in [0, 1). The sweep reads
it at the last grid instant that leaves its last success no older than the bound. Calendars
refreshed together (a tenant onboarded at once) are thus read at instants spread evenly over
the bound, and stay spread: each is read once per bound at its own instant, whatever the others
do.

A calendar whose last success was a read that its own change notification asked for is read
one bound after that read instead: a calendar that notifications keep reading needs no sweep
read. Such reads need no grid to be spread: they come when the calendar's changes do.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from bookingcache.domain.subscriptions import DELETED, FAILED, NO_ACTION
from bookingcache.store.dutystate import SilenceRecord
from bookingcache.store.subscriptions import CalendarRecord

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


# How soon after its calendar's change notification a successful read counts as the read
# that notification asked for (its burst is gathered for a moment, and the read may wait its
# turn, a retry, or a throttled mailbox's Retry-After).
NOTICE_S = 60.0


def read_on_notice(last_success_at: dt.datetime, notified_at: dt.datetime | None) -> bool:
    """Whether the last success came within ``NOTICE_S`` after the calendar's last change
    notification: the read it asked for."""
    if notified_at is None:
        return False
    return dt.timedelta(0) <= last_success_at - notified_at <= dt.timedelta(seconds=NOTICE_S)


def due(
    last_success_at: dt.datetime,
    *,
    bound_s: float,
    at: float,
    notified_at: dt.datetime | None = None,
) -> dt.datetime:
    """When the sweep reads the calendar next: one bound after a read its change notification
    asked for (``notified_at``: its last), else at its grid instant (``next_read``). Either
    way no later than its last success plus the bound."""
    if read_on_notice(last_success_at, notified_at):
        return last_success_at + dt.timedelta(seconds=bound_s)
    return next_read(last_success_at, bound_s=bound_s, at=at)


def long_bound_s(*, short_s: float, healthy_s: float, staleness_s: float) -> float:
    """The long bound of a tenant whose staleness bound is ``staleness_s``: ``healthy_s`` but
    at most the staleness bound less the short bound, and never below the short bound."""
    return max(short_s, min(healthy_s, staleness_s - short_s))


def listening(
    record: CalendarRecord,
    silence: SilenceRecord | None,
    *,
    now: dt.datetime,
    bound_s: float,
    tenant_notified_at: dt.datetime | None = None,
) -> bool:
    """Whether the calendar's subscription may be trusted to announce its changes for the
    next ``bound_s`` (the long bound). ``tenant_notified_at``: the latest change notification
    to any calendar of the tenant."""
    within = dt.timedelta(seconds=bound_s)
    if (
        record.subscription_id is None
        or record.status in (FAILED, DELETED)
        or record.error is not None
        or record.needs_action not in (None, NO_ACTION)
        or record.consecutive_failures > 0
        or (record.expires_at is not None and record.expires_at - now < within)
    ):
        return False
    if silence is not None and (silence.silent_since is not None or silence.unannounced > 0):
        return False
    if silence is not None:
        return True
    heard = [at for at in (record.last_notification_at, tenant_notified_at) if at is not None]
    return bool(heard) and now - max(heard) <= within
