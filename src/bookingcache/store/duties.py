"""Cluster duties: each periodic duty runs in one process of the cluster at a time.

The port ``Cluster`` (``store.sql.cluster.SqlCluster`` fills it) keeps, in the database:

- one lease per duty: its holder (a process incarnation), when it expires, and a fencing token
  that grows by one at every change of holder;
- one heartbeat row per process incarnation. A process that starts takes back at once the job
  claims and duty leases of its own previous incarnations (same ``instance_id``); every
  heartbeat also releases the claims and leases of peers whose heartbeat stopped for
  ``peer_dead_after_s``, well before their leases run out.

``DutyKeeper`` is a process's side: it heartbeats, takes the free duties it can run and renews
those it holds every ``renew_s`` (each lease lasts ``lease_s``), tries again for a duty held
elsewhere as that holder's lease ends (when sooner than ``renew_s``), and before a duty acts it
confirms the lease (``confirm``): not lapsed by this process's own reckoning (a process that was
stopped past its lease finds it lapsed on waking) and renewed in the database under the same
token (a process that lost the lease finds another holder). Writes that carry the lease compare
the token in their own transaction (``LeaseLost``). docs/operations.md, "Cluster duties".
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from bookingcache.clock import Clock
from bookingcache.telemetry.metricsets import MetricSet

log = logging.getLogger(__name__)

CONVERGE = "converge"  # subscription convergence and renewal
SWEEP = "sweep"  # the reconciliation sweep
SILENCE = "silence"  # silence detection over the change feed
RETENTION = "retention"  # pruning the inbox's record and the change feed
DUTIES = (CONVERGE, SWEEP, SILENCE, RETENTION)
# A candidate tries a duty this long after the holder's lease ends by its clock: the lease is
# taken only once it has run out (``expires_at < now``).
TAKEOVER_MARGIN_S = 0.05


class LeaseLost(Exception):
    """The duty's lease is no longer this process's: whatever the duty was writing is not
    written."""


@dataclass(frozen=True, slots=True)
class Lease:
    duty: str
    holder: str
    token: int
    expires_at: dt.datetime


class Cluster(Protocol):
    async def register(self, incarnation: str, instance_id: str) -> int:
        """Record this process's incarnation and take back at once what earlier incarnations
        of ``instance_id`` held (their job claims fall due, their leases are free). How many
        claims were taken back."""
        ...

    async def heartbeat(
        self, incarnation: str, *, dead_after_s: float, stale_after_s: float | None = None
    ) -> int:
        """This incarnation is alive; release the claims and leases of dead peers: silent for
        ``dead_after_s``, or, where the database can tell that a peer's session is gone, silent
        for ``stale_after_s`` with it gone. How many claims were released."""
        ...

    async def retire(self, incarnation: str) -> None:
        """A clean stop: the heartbeat row goes and the incarnation's leases are free."""
        ...

    async def close(self) -> None:
        """Let go of what ties this process's incarnations to the database (its sessions)."""
        ...

    async def acquire(self, duty: str, holder: str, *, lease_s: float) -> Lease | None:
        """Renew ``holder``'s lease of ``duty``, or take the duty if it is free or its lease
        ran out (a new token); None when another holder's lease runs."""
        ...

    async def renew(self, lease: Lease, *, lease_s: float) -> Lease | None:
        """Extend ``lease`` if it is still the holder's under the same token; None if lost."""
        ...

    async def release(self, lease: Lease) -> None: ...

    async def leases(self) -> list[Lease]:
        """Every duty's current lease (expired ones included, with their holders)."""
        ...


class DutyMetrics(MetricSet):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.held = Gauge(
            "bookingcache_duty_held",
            "1 while this process holds the cluster duty's lease, else 0",
            ["duty"],
            registry=registry,
        )
        self.runs = Counter(
            "bookingcache_duty_runs",
            "Runs of the cluster duty in this process (each after confirming its lease)",
            ["duty"],
            registry=registry,
        )


class DutyKeeper:
    """One process's duties and heartbeat (see the module docstring)."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        clock: Clock,
        incarnation: str,
        instance_id: str,
        lease_s: float = 15.0,
        renew_s: float = 5.0,
        heartbeat_s: float = 1.0,
        peer_dead_after_s: float = 5.0,
        metrics: DutyMetrics | None = None,
    ) -> None:
        if renew_s >= lease_s:
            raise ValueError("duty leases must be renewed more often than they last")
        self.cluster = cluster
        self.incarnation = incarnation
        self.instance_id = instance_id
        self.lease_s = lease_s
        self.renew_s = renew_s
        self.heartbeat_s = heartbeat_s
        self.peer_dead_after_s = peer_dead_after_s
        self._clock = clock
        self._metrics = metrics
        self._wanted: set[str] = set()
        self._held: dict[str, Lease] = {}
        # When each held lease was last confirmed in the database, by this process's clock.
        self._confirmed: dict[str, dt.datetime] = {}
        self._registered = False
        self._task: asyncio.Task[None] | None = None
        self.taken_back = 0
        self.released_peers = 0

    # --- what the process runs -------------------------------------------------------------
    def want(self, duties: Iterable[str]) -> None:
        """This process can run ``duties``: it takes them when they are free."""
        for duty in duties:
            if duty not in DUTIES:
                raise ValueError(f"unknown duty {duty!r}")
            self._wanted.add(duty)
            if self._metrics is not None:
                self._metrics.held.labels(duty).set(0)

    def wanted(self) -> list[str]:
        return sorted(self._wanted)

    def held(self) -> list[Lease]:
        """The leases this process holds and has not seen lapse."""
        now = self._clock.now()
        return [lease for duty, lease in sorted(self._held.items()) if self._fresh(duty, now)]

    def holds(self, duty: str) -> bool:
        return self._fresh(duty, self._clock.now())

    def _fresh(self, duty: str, now: dt.datetime) -> bool:
        confirmed = self._confirmed.get(duty)
        return confirmed is not None and now - confirmed < dt.timedelta(seconds=self.lease_s)

    # --- the loop ------------------------------------------------------------------------------
    def launch(self) -> None:
        """Run in the background: register (taking back the previous incarnation's claims),
        take the free duties, then heartbeat and renew."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="cluster duties")

    async def register(self) -> None:
        if not self._registered:
            self.taken_back = await self.cluster.register(self.incarnation, self.instance_id)
            self._registered = True
            if self.taken_back:
                log.info(
                    "took back %d job claims of an earlier incarnation of %s",
                    self.taken_back,
                    self.instance_id,
                )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._registered:
            with contextlib.suppress(Exception):  # the database may be gone; leases expire
                await self.cluster.retire(self.incarnation)
            self._registered = False
        await self.cluster.close()
        for duty in list(self._held):
            self._drop(duty)

    async def _run(self) -> None:
        next_tend_in = self.renew_s
        while not self._registered:
            try:
                await self.register()
                next_tend_in = await self.tend()
            except Exception:  # the database may not be there yet
                log.exception("could not join the cluster")
                await asyncio.sleep(self.heartbeat_s)
        # Beats and renewals keep their own times by the loop's clock: a slow beat (a busy
        # database, a starved process) neither stretches the renewal period nor delays a
        # takeover that is due.
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self.heartbeat_s
        next_tend = loop.time() + next_tend_in
        while True:
            await asyncio.sleep(max(0.0, min(next_beat, next_tend) - loop.time()))
            if loop.time() >= next_beat:
                next_beat = loop.time() + self.heartbeat_s
                await self._beat()
            if loop.time() >= next_tend:
                next_tend = loop.time() + self.renew_s
                try:
                    next_tend = loop.time() + await self.tend()
                except Exception:  # the database may be away; leases lapse by themselves
                    log.exception("could not renew the cluster's duties")

    async def _beat(self) -> None:
        try:
            released = await self.cluster.heartbeat(
                self.incarnation,
                dead_after_s=self.peer_dead_after_s,
                stale_after_s=2 * self.heartbeat_s,
            )
        except Exception:  # the database may be away; leases lapse by themselves
            log.exception("cluster heartbeat failed")
            return
        if released:
            self.released_peers += released
            log.warning("released %d job claims of a silent peer", released)

    async def tend(self) -> float:
        """Renew the held leases and take the free duties this process wants; the seconds
        until the next try: a renewal period, or less when a duty held by another process
        runs out sooner (so that a holder that stopped is replaced as its lease ends, not up
        to a renewal period later)."""
        for duty in sorted(self._wanted):
            await self._acquire(duty)
        others = [duty for duty in self._wanted if duty not in self._held]
        if not others:
            return self.renew_s
        now = self._clock.now()
        ends = [
            (lease.expires_at - now).total_seconds()
            for lease in await self.cluster.leases()
            if lease.duty in others
        ]
        return min([self.renew_s, *(max(end, 0.0) + TAKEOVER_MARGIN_S for end in ends)])

    async def _acquire(self, duty: str) -> Lease | None:
        before = self._held.get(duty)
        lease = await self.cluster.acquire(duty, self.incarnation, lease_s=self.lease_s)
        if lease is None:
            if before is not None:
                log.warning("lost the lease of the %s duty", duty)
            self._drop(duty)
            return None
        if before is None or before.token != lease.token:
            log.info("holding the %s duty (token %d)", duty, lease.token)
        self._hold(lease)
        return lease

    def _hold(self, lease: Lease) -> None:
        self._held[lease.duty] = lease
        self._confirmed[lease.duty] = self._clock.now()
        if self._metrics is not None:
            self._metrics.held.labels(lease.duty).set(1)

    def _drop(self, duty: str) -> None:
        self._held.pop(duty, None)
        self._confirmed.pop(duty, None)
        if self._metrics is not None and duty in self._wanted:
            self._metrics.held.labels(duty).set(0)

    # --- fencing -------------------------------------------------------------------------------
    async def confirm(self, duty: str) -> Lease | None:
        """Before a duty acts: the lease, renewed under its token, or None (do not act). A
        lease not confirmed within ``lease_s`` by this process's clock counts as lost whatever
        the database says (the process may have been stopped past its expiry), and the
        duty is taken again only as a free duty would be (a new token)."""
        lease = self._held.get(duty)
        if lease is None:
            return None
        if not self._fresh(duty, self._clock.now()):
            log.warning("the lease of the %s duty lapsed before it could act", duty)
            self._drop(duty)
            return None
        renewed = await self.cluster.renew(lease, lease_s=self.lease_s)
        if renewed is None:
            log.warning("lost the lease of the %s duty", duty)
            self._drop(duty)
            return None
        self._hold(renewed)
        return renewed

    def ran(self, duty: str) -> None:
        """The duty ran (after ``confirm``)."""
        if self._metrics is not None:
            self._metrics.runs.labels(duty).inc()
