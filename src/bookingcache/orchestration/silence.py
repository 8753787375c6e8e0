"""Finding calendars whose notifications stopped without a word.

The store's change feed has an entry for every committed refresh whose diff was not empty.
For each, the tracker asks whether any change notification for that calendar arrived since the
previous change it saw: if none did, reconciliation found a change nobody announced. After
``silent_after`` such changes in a row the calendar is ``silent``; the next announced change
(notifications are back) clears it. The first change seen of a calendar only sets the baseline
(the initial read after linking announces nothing by nature).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bookingcache.clock import Clock
from bookingcache.store.port import CalendarChange, Store
from bookingcache.store.subscriptions import Subscriptions

log = logging.getLogger(__name__)

Key = tuple[str, str]


@dataclass(slots=True)
class _Seen:
    baseline: dt.datetime
    unannounced: int = 0
    silent_since: dt.datetime | None = None


class SilenceTracker:
    def __init__(
        self,
        records: Subscriptions,
        *,
        clock: Clock,
        silent_after: int = 2,
        observe_lag: Callable[[float], None] | None = None,
    ) -> None:
        self._records = records
        self._clock = clock
        self._silent_after = silent_after
        self._observe_lag = observe_lag
        self._seen: dict[Key, _Seen] = {}

    async def follow(self, store: Store, *, interval_s: float, batch: int = 1000) -> None:
        """Judge every change of the store's change feed from now on. The feed is shared by
        every process, so refreshes a separate ``bookingcache worker`` commits count too."""
        seq = await _retrying(store.last_change_seq, interval_s)
        while True:
            try:
                changes = await store.changes_since(seq, limit=batch)
            except Exception:  # the database may be away for a while; keep following
                log.exception("could not read the change feed")
                changes = []
            for change in changes:
                await self.judge(change)
                seq = change.seq
            if len(changes) < batch:
                await asyncio.sleep(interval_s)

    async def judge(self, change: CalendarChange) -> None:
        key = (change.tenant_id, change.mailbox)
        try:
            notified = await self._records.last_notification(*key)
        except Exception:  # judging is best effort; the next change judges again
            log.exception("could not judge change of %s/%s", *key)
            return
        seen = self._seen.get(key)
        if seen is None:
            self._seen[key] = _Seen(baseline=change.at)
            return
        if notified is not None and notified > seen.baseline:
            if self._observe_lag is not None:
                self._observe_lag(max(0.0, (change.at - notified).total_seconds()))
            if seen.silent_since is not None:
                log.info("notifications for %s/%s are back", *key)
            seen.unannounced = 0
            seen.silent_since = None
        else:
            seen.unannounced += 1
            if seen.unannounced >= self._silent_after and seen.silent_since is None:
                seen.silent_since = self._clock.now()
                log.warning("calendar %s/%s is silent: changes arrive without notifications", *key)
        seen.baseline = max(seen.baseline, change.at)

    def silent_since(self, tenant_id: str, mailbox: str) -> dt.datetime | None:
        seen = self._seen.get((tenant_id, mailbox))
        return None if seen is None else seen.silent_since

    def unannounced(self, tenant_id: str, mailbox: str) -> int:
        seen = self._seen.get((tenant_id, mailbox))
        return 0 if seen is None else seen.unannounced

    def silent(self) -> list[Key]:
        return [key for key, seen in self._seen.items() if seen.silent_since is not None]

    def notified(self, tenant_id: str, mailbox: str, at: dt.datetime | None) -> None:
        """A notification arrived (seen by the health view): a silent calendar is silent no
        longer once a notification newer than its silence shows up."""
        seen = self._seen.get((tenant_id, mailbox))
        if seen is None or seen.silent_since is None or at is None:
            return
        if at > seen.silent_since:
            seen.silent_since = None
            seen.unannounced = 0

    def forget(self, tenant_id: str, mailbox: str) -> None:
        self._seen.pop((tenant_id, mailbox), None)


async def _retrying(read: Callable[[], Awaitable[int]], interval_s: float) -> int:
    while True:
        try:
            return await read()
        except Exception:
            log.exception("could not read the change feed")
            await asyncio.sleep(interval_s)
