"""Finding calendars whose notifications stopped without a word.

The store's change feed has an entry for every committed refresh whose diff was not empty.
For each, the tracker asks whether any change notification for that calendar arrived since the
previous change it saw: if none did, reconciliation found a change nobody announced. After
``silent_after`` such changes in a row the calendar is ``silent``; the next announced change
(notifications are back) clears it. The first change seen of a calendar only sets the baseline
(the initial read after linking announces nothing by nature).

Judging is the ``silence`` cluster duty: one process of the cluster follows the feed, and its
judgements and its place in the feed live in the database (``store.dutystate``), written under
its lease (a process that lost the lease writes nothing), so the next holder carries on where it
stopped. Every process reads the judgements from there for the health view.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence

from bookingcache.clock import Clock
from bookingcache.store.duties import SILENCE, DutyKeeper, Lease, LeaseLost
from bookingcache.store.dutystate import DutyState, SilenceRecord
from bookingcache.store.port import CalendarChange, Store
from bookingcache.store.subscriptions import Subscriptions

log = logging.getLogger(__name__)

Key = tuple[str, str]


class SilenceTracker:
    def __init__(
        self,
        records: Subscriptions,
        state: DutyState,
        *,
        clock: Clock,
        silent_after: int = 2,
        observe_lag: Callable[[float], None] | None = None,
        duties: DutyKeeper | None = None,
    ) -> None:
        self._records = records
        self._state = state
        self._clock = clock
        self._silent_after = silent_after
        self._observe_lag = observe_lag
        self._duties = duties
        self._seen: dict[Key, SilenceRecord] = {}
        # The lease the judgements in memory were loaded under (None: not loaded).
        self._loaded: Lease | None = None
        self._dirty: set[Key] = set()

    async def follow(self, store: Store, *, interval_s: float, batch: int = 1000) -> None:
        """Judge every change of the store's change feed, while this process holds the silence
        duty. The feed is shared by every process, so refreshes a separate ``bookingcache
        worker`` commits count too."""
        if self._duties is not None:
            self._duties.want([SILENCE])
        seq: int | None = None
        while True:
            try:
                lease = await self._lease()
                if lease is None:
                    self._loaded, seq = None, None
                    await asyncio.sleep(interval_s)
                    continue
                if self._loaded is None or self._loaded.token != lease.token or seq is None:
                    # Taken over (or started): carry on from what the last holder wrote.
                    self._seen = await self._state.silence_records()
                    seq = await self._state.silence_cursor()
                    if seq is None:
                        seq = await _retrying(store.last_change_seq, interval_s)
                    self._loaded = lease
                changes = await store.changes_since(seq, limit=batch)
                await self.judge(changes)
                if changes:
                    seq = changes[-1].seq
                await self._save(seq, lease)
                if self._duties is not None:
                    self._duties.ran(SILENCE)
            except LeaseLost:
                log.warning("the silence duty's lease was lost: its last judgements are not kept")
                self._loaded, seq, changes = None, None, []
            except Exception:  # the database may be away for a while; keep following
                log.exception("could not follow the change feed")
                self._loaded, seq, changes = None, None, []
            if len(changes) < batch:
                await asyncio.sleep(interval_s)

    async def _lease(self) -> Lease | None:
        if self._duties is None:
            return _UNFENCED
        return await self._duties.confirm(SILENCE)

    async def _save(self, seq: int, lease: Lease) -> None:
        dirty = [self._seen[key] for key in sorted(self._dirty) if key in self._seen]
        await self._state.save_silence(
            dirty, cursor=seq, lease=None if lease is _UNFENCED else lease
        )
        self._dirty.clear()

    async def load(self) -> None:
        """Read the judgements from the database (a process that does not judge itself)."""
        if self._loaded is None:
            self._seen = await self._state.silence_records()

    async def judge(self, changes: Sequence[CalendarChange]) -> None:
        """Judge changes of the feed in order, with one read of their calendars' newest
        notifications."""
        if not changes:
            return
        keys = {(change.tenant_id, change.mailbox) for change in changes}
        try:
            notified = await self._records.last_notifications(keys)
        except Exception:  # judging is best effort; the next change judges again
            log.exception("could not judge %d changes", len(changes))
            return
        for change in changes:
            self._judge_one(change, notified.get((change.tenant_id, change.mailbox)))

    def _judge_one(self, change: CalendarChange, notified: dt.datetime | None) -> None:
        key = (change.tenant_id, change.mailbox)
        seen = self._seen.get(key)
        self._dirty.add(key)
        if seen is None:
            self._seen[key] = SilenceRecord(key[0], key[1], baseline=change.at)
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

    async def notified(self, tenant_id: str, mailbox: str, at: dt.datetime | None) -> None:
        """A notification arrived (seen by the health view): a silent calendar is silent no
        longer once a notification newer than its silence shows up."""
        seen = self._seen.get((tenant_id, mailbox))
        if seen is None or seen.silent_since is None or at is None:
            return
        if at > seen.silent_since:
            seen.silent_since = None
            seen.unannounced = 0
            await self._state.clear_silence(tenant_id, mailbox)

    async def forget(self, tenant_id: str, mailbox: str) -> None:
        self._seen.pop((tenant_id, mailbox), None)
        self._dirty.discard((tenant_id, mailbox))
        await self._state.forget_silence(tenant_id, mailbox)


# The lease of a tracker that runs without a cluster (every change is its own to judge).
_UNFENCED = Lease(SILENCE, "", 0, dt.datetime.max.replace(tzinfo=dt.UTC))


async def _retrying(read: Callable[[], Awaitable[int]], interval_s: float) -> int:
    while True:
        try:
            return await read()
        except Exception:
            log.exception("could not read the change feed")
            await asyncio.sleep(interval_s)
