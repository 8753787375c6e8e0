"""Fixtures of the sync tests: the job queue and the inbox over the shared ``store`` fixture."""

from __future__ import annotations

import pytest

from bookingcache.clock import FixedClock
from bookingcache.store.sql.inbox import SqlInbox
from bookingcache.store.sql.jobs import SqlJobQueue
from bookingcache.store.sql.store import SqlStore


@pytest.fixture
def queue(store: SqlStore, clock: FixedClock) -> SqlJobQueue:
    return SqlJobQueue(store, clock=clock, coalesce_s=0.2, lease_s=30.0, max_attempts=3)


@pytest.fixture
def inbox(store: SqlStore, queue: SqlJobQueue, clock: FixedClock) -> SqlInbox:
    return SqlInbox(store, jobs=queue, clock=clock)
