"""The connector's small durable state: one SQLite file in the configured state directory.

* ``inbox``: notifications accepted from Graph and not yet delivered to the service (a row is
  committed before Graph gets its 202, and deleted only after the service answered 202);
* ``subscriptions``: subscription id -> mailbox (and the clientState it was created with), as
  learnt from creating and listing subscriptions;
* ``desired``: the last desired set stated by the service, for the renewal timer;
* ``relay``: since when forwarding has been failing;
* ``pushed``: when each mailbox's window was last delivered to the service (with pushed
  events), for the reconciliation that keeps quiet calendars fresh.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('change', 'lifecycle', 'resync')),
    subscription_id TEXT NOT NULL,
    mailbox TEXT,
    value TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS subscriptions (
    subscription_id TEXT PRIMARY KEY,
    mailbox TEXT NOT NULL,
    client_state TEXT
);
CREATE TABLE IF NOT EXISTS desired (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS relay (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    failing_since TEXT,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS pushed (mailbox TEXT PRIMARY KEY, pushed_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS heard (id INTEGER PRIMARY KEY CHECK (id = 1), at TEXT NOT NULL);
"""

# Ids in one ``IN (...)`` list: well under SQLite's limit on a statement's parameters.
_IN_LIST = 500


def _marks(count: int) -> str:
    return ", ".join("?" * count)


@dataclass(frozen=True)
class InboxItem:
    seq: int
    kind: str
    subscription_id: str
    mailbox: str | None
    value: str


class StateStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)

    @classmethod
    def in_directory(cls, directory: Path) -> StateStore:
        return cls(directory / "connector.sqlite3")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- inbox ------------------------------------------------------------------------------

    def enqueue(self, rows: Iterable[tuple[str, str, str | None, str]], at: datetime) -> int:
        """Commit ``(kind, subscription_id, mailbox, value)`` rows; returns how many. A change
        notification among them is also kept as the last one heard (``heard_at``)."""
        batch = [(k, s, m, v, at.isoformat()) for k, s, m, v in rows]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO inbox (kind, subscription_id, mailbox, value, received_at) "
                "VALUES (?, ?, ?, ?, ?)",
                batch,
            )
            if any(row[0] == "change" for row in batch):
                self._db.execute(
                    "INSERT INTO heard (id, at) VALUES (1, ?) "
                    "ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                    (at.isoformat(),),
                )
            self._db.execute("COMMIT")
        return len(batch)

    def heard_at(self) -> datetime | None:
        """When the last change notification from Graph was committed."""
        with self._lock:
            row = self._db.execute("SELECT at FROM heard").fetchone()
        return None if row is None else datetime.fromisoformat(row[0])

    def pending(self, limit: int = 1000) -> list[InboxItem]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, kind, subscription_id, mailbox, value FROM inbox ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [InboxItem(*row) for row in rows]

    def pending_count(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM inbox").fetchone()
        return int(count)

    def oldest_pending_at(self) -> datetime | None:
        """When the oldest item of the backlog was received; None when it is empty."""
        with self._lock:
            (oldest,) = self._db.execute("SELECT MIN(received_at) FROM inbox").fetchone()
        return datetime.fromisoformat(oldest) if oldest else None

    def remove(self, seqs: Iterable[int]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM inbox WHERE seq = ?", [(s,) for s in seqs])
            self._db.execute("COMMIT")

    def collapse_to_resync(self, mailbox_of: dict[str, str], at: datetime) -> None:
        """Replace the whole backlog by one ``resync`` row per mailbox, in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            rows = self._db.execute("SELECT subscription_id, mailbox, kind, value FROM inbox")
            mailboxes: set[str] = set()
            unresolved: list[tuple[str, str, str]] = []
            for subscription_id, mailbox, kind, value in rows.fetchall():
                resolved = mailbox or mailbox_of.get(subscription_id)
                if resolved:
                    mailboxes.add(resolved)
                else:
                    unresolved.append((kind, subscription_id, value))
            self._db.execute("DELETE FROM inbox")
            stamp = at.isoformat()
            self._db.executemany(
                "INSERT INTO inbox (kind, subscription_id, mailbox, value, received_at) "
                "VALUES ('resync', '', ?, 'resync', ?)",
                [(m, stamp) for m in sorted(mailboxes)],
            )
            self._db.executemany(
                "INSERT INTO inbox (kind, subscription_id, mailbox, value, received_at) "
                "VALUES (?, ?, NULL, ?, ?)",
                [(k, s, v, stamp) for k, s, v in unresolved],
            )
            self._db.execute("COMMIT")

    # -- relay failure bookkeeping ----------------------------------------------------------

    def failing_since(self) -> tuple[datetime | None, int]:
        with self._lock:
            row = self._db.execute("SELECT failing_since, attempts FROM relay").fetchone()
        if row is None or row[0] is None:
            return None, 0
        return datetime.fromisoformat(row[0]), int(row[1])

    def record_failure(self, at: datetime) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO relay (id, failing_since, attempts) VALUES (1, ?, 1) "
                "ON CONFLICT (id) DO UPDATE SET attempts = attempts + 1, "
                "failing_since = COALESCE(failing_since, excluded.failing_since)",
                (at.isoformat(),),
            )

    def record_success(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM relay")

    # -- pushed windows ---------------------------------------------------------------------

    def record_pushed(self, mailboxes: Iterable[str], at: datetime) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT INTO pushed (mailbox, pushed_at) VALUES (?, ?) "
                "ON CONFLICT (mailbox) DO UPDATE SET pushed_at = excluded.pushed_at",
                [(mailbox, at.isoformat()) for mailbox in mailboxes],
            )

    def last_pushed(self) -> dict[str, datetime]:
        with self._lock:
            rows = self._db.execute("SELECT mailbox, pushed_at FROM pushed").fetchall()
        return {mailbox: datetime.fromisoformat(at) for mailbox, at in rows}

    # -- subscription map -------------------------------------------------------------------

    def remember_subscription(
        self, subscription_id: str, mailbox: str, client_state: str | None
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO subscriptions (subscription_id, mailbox, client_state) "
                "VALUES (?, ?, ?) ON CONFLICT (subscription_id) DO UPDATE SET "
                "mailbox = excluded.mailbox, "
                "client_state = COALESCE(excluded.client_state, subscriptions.client_state)",
                (subscription_id, mailbox, client_state),
            )

    def forget_subscription(self, subscription_id: str) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM subscriptions WHERE subscription_id = ?", (subscription_id,)
            )

    def subscription_map(self) -> dict[str, str]:
        with self._lock:
            rows = self._db.execute("SELECT subscription_id, mailbox FROM subscriptions")
            return {sid: mailbox for sid, mailbox in rows.fetchall()}

    def client_states_of(self, subscription_ids: Iterable[str]) -> dict[str, str]:
        """The clientState of each of these subscriptions that has one (by its id): what a
        batch of notifications needs, without reading every subscription."""
        wanted = sorted(set(subscription_ids))
        found: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(wanted), _IN_LIST):
                part = wanted[start : start + _IN_LIST]
                # Only placeholders are formatted in; the ids are bound.
                query = (
                    "SELECT subscription_id, client_state FROM subscriptions "  # noqa: S608
                    "WHERE client_state IS NOT NULL AND subscription_id IN "
                    f"({_marks(len(part))})"
                )
                rows = self._db.execute(query, part).fetchall()
                found.update((sid, state) for sid, state in rows)
        return found

    def client_states(self) -> set[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT client_state FROM subscriptions WHERE client_state IS NOT NULL"
            ).fetchall()
        return {state for (state,) in rows}

    # -- desired set ------------------------------------------------------------------------

    def save_desired(self, body: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO desired (id, body) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                (json.dumps(body),),
            )

    def staleness_bound_s(self) -> float | None:
        """The tenant's staleness bound the service sent with the desired set, if it did."""
        with self._lock:
            row = self._db.execute(
                "SELECT json_extract(body, '$.stalenessBoundS') FROM desired"
            ).fetchone()
        value = None if row is None else row[0]
        return float(value) if isinstance(value, int | float) and value > 0 else None

    def load_desired(self) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM desired").fetchone()
        if row is None:
            return None
        loaded: dict[str, Any] = json.loads(row[0])
        return loaded


class StoredCalls:
    """The ``webhook-id`` of every signed call accepted within the replay window, in a SQLite
    file of the state directory, so a restarted connector, or another process on the same
    directory, refuses a replay too (``signing.SeenCalls``).

    A file of its own with ``synchronous=NORMAL``: an id survives the process, and only a power
    cut in the five minutes after a call could let its replay through once; flushing the disk at
    every call the service makes would cost more than that is worth. Ids whose window is over
    are deleted at most every ``prune_s`` seconds."""

    def __init__(self, path: Path, *, prune_s: float = 30.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5.0)
        self._lock = threading.Lock()
        self._prune_s = prune_s
        self._pruned_at: float | None = None
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS seen_calls ("
                "webhook_id TEXT PRIMARY KEY, sent_at INTEGER NOT NULL)"
            )
            self._db.execute(
                "CREATE INDEX IF NOT EXISTS ix_seen_calls_sent_at ON seen_calls (sent_at)"
            )

    @classmethod
    def in_directory(cls, directory: Path) -> StoredCalls:
        return cls(directory / "seen-calls.sqlite3")

    def claim(self, webhook_id: str, sent_at: datetime, *, forget_before: datetime) -> bool:
        cutoff = forget_before.timestamp()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._pruned_at is None or cutoff - self._pruned_at >= self._prune_s:
                    self._db.execute("DELETE FROM seen_calls WHERE sent_at < ?", (int(cutoff),))
                    self._pruned_at = cutoff
                inserted = self._db.execute(
                    "INSERT OR IGNORE INTO seen_calls (webhook_id, sent_at) VALUES (?, ?)",
                    (webhook_id, int(sent_at.timestamp())),
                ).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return inserted == 1

    def close(self) -> None:
        with self._lock:
            self._db.close()
