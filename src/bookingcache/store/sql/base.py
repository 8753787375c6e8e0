"""The plumbing under ``SqlStore``: error translation, read and write transactions, and the
in-process listeners told about committed changes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Self, TypeVar, cast

import asyncpg
from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection, RootTransaction
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bookingcache.clock import Clock, SystemClock
from bookingcache.errors import BookingCacheError, InvalidInput, StoreUnavailable
from bookingcache.store.port import (
    ChangedCalendar,
    ChangeListener,
    RoomsListener,
    TenantsListener,
)
from bookingcache.store.sealing import SecretBox
from bookingcache.store.sql import engine as engines
from bookingcache.store.sql.notices import CHANGES_CHANNEL, Announcer, Notices
from bookingcache.store.sql.writer import WriterThread

log = logging.getLogger(__name__)

T = TypeVar("T")


@contextlib.asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Database trouble becomes ``StoreUnavailable``; the service's own errors pass through."""
    try:
        yield
    except BookingCacheError:
        raise
    except DataError as exc:
        # A value the checks above the database let through but a column cannot hold (say an
        # over-long text on PostgreSQL): the caller's input, not a server fault.
        raise InvalidInput(f"a value does not fit the database: {exc.orig}") from exc
    except (OperationalError, InterfaceError) as exc:
        raise StoreUnavailable(f"the database failed: {exc.orig or exc}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailable(f"the database connection was lost: {exc.orig}") from exc
        raise
    except (OSError, TimeoutError) as exc:
        raise StoreUnavailable(f"the database is not reachable: {exc}") from exc


class SqlBase:
    """Engine, transactions and in-process listeners; ``SqlStore`` adds the store's operations.

    ``read()`` and ``transaction()`` are also the seam the other adapters over the same database
    use (inbox, jobs, subscriptions, replays), so every write takes the one path:

    - ``read()``: an ``AsyncConnection`` for reads.
    - ``transaction(work)``: ``work`` is plain synchronous SQLAlchemy on a ``Connection``, run as
      ONE transaction, committed when it returns. On PostgreSQL it runs inside the async
      connection (``run_sync``: asyncpg's statements are awaited on the event loop). On SQLite
      it runs whole on the store's writer thread, whose connection is opened with the same
      settings as the async engine's (``store.engine``), from ``BEGIN IMMEDIATE`` to ``COMMIT``:
      one hand-off between threads per transaction. Handing every statement over (as the async
      SQLite driver does) costs a thread switch each, and in a busy process each such switch
      may wait for the interpreter lock for up to its switch interval. A ``brief`` transaction
      (intake's commit round, the job queue's claims of a short queue and its completions)
      runs on the event loop's thread instead while the writer thread
      has nothing to do and SQLite's write lock is free (``_on_loop``).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        box: SecretBox,
        clock: Clock | None = None,
        fsync: bool = False,
        idle_transaction_s: float = engines.IDLE_TRANSACTION_S,
    ) -> None:
        self._engine = engine
        self._box = box
        self._clock = clock or SystemClock()
        self._fsync = fsync
        self._idle_transaction_s = idle_transaction_s
        # SQLite: the writer thread and its engine (one connection), made on first use.
        self._writer: WriterThread | None = None
        self._writer_engine: Engine | None = None
        self._writer_connection: Connection | None = None
        self._listeners: list[ChangeListener] = []
        self._rooms_listeners: list[RoomsListener] = []
        self._tenants_listeners: list[TenantsListener] = []
        self._feed_watchers: dict[Callable[[], None], Callable[[str], None]] = {}
        # PostgreSQL: the connection listening for other processes' notices, once asked for,
        # and the sender of notices announced after a commit.
        self._notices: Notices | None = None
        self._announcer: Announcer | None = None

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def box(self) -> SecretBox:
        """What seals the secrets this database keeps (``store.sealing``)."""
        return self._box

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    # --- plumbing ------------------------------------------------------------------------
    async def _connect(self, stack: contextlib.AsyncExitStack) -> AsyncConnection:
        """A pooled connection, closed with ``stack``. Whatever fails while connecting (refused,
        timed out, the database gone, authentication) means the database is unavailable."""
        try:
            return await stack.enter_async_context(self._engine.connect())
        except BookingCacheError:
            raise
        except Exception as exc:
            raise StoreUnavailable(f"cannot connect to the database: {exc}") from exc

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads: a deferred transaction on SQLite, rolled back after (its
        statements share one snapshot); on PostgreSQL each statement on its own (autocommit).

        At PostgreSQL's READ COMMITTED every statement takes its own snapshot inside a
        transaction too, so a read loses nothing without one, and saves the ``BEGIN`` and the
        ``ROLLBACK``: two of its three round trips. Writes go through ``transaction``."""
        async with translate_errors(), contextlib.AsyncExitStack() as stack:
            conn = await self._connect(stack)
            if not engines.is_sqlite(self._engine):
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    async def transaction(self, work: Callable[[Connection], T], *, brief: bool = False) -> T:
        """Run ``work`` as one write transaction (see the class docstring); its result.

        ``brief``: the caller knows ``work`` to be a few statements over a few rows (intake's
        commit round, a short queue's claim, a completion). On SQLite it then runs on the event
        loop's thread when it can start at once there, which saves the hand-off to the writer
        thread and back (see ``_on_loop``)."""
        async with translate_errors():
            if not engines.is_sqlite(self._engine):
                async with contextlib.AsyncExitStack() as stack:
                    conn = await self._connect(stack)
                    await stack.enter_async_context(conn.begin())
                    return await conn.run_sync(work)
            if self._writer is None:
                self._writer = WriterThread("bookingcache-sqlite-writer")
            if brief and not self._fsync and self._writer.idle:
                ran, result = self._on_loop(work)
                if ran:
                    return cast(T, result)
            running = self._writer.run(functools.partial(self._on_writer, work))
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                # The transaction runs to its end on the writer thread whatever the caller
                # does; the caller only stops waiting once it has.
                with contextlib.suppress(Exception):
                    await running
                raise

    async def in_chunks(
        self, work: Callable[[Connection], int], *, chunk: int, max_chunks: int
    ) -> int:
        """Run ``work`` (a transaction that handles at most ``chunk`` rows and says how many it
        handled) again while it finds a full chunk, at most ``max_chunks`` times: a long pruning
        holds no lock for long. The rows handled in all."""
        handled = 0
        for _ in range(max_chunks):
            done = await self.transaction(work)
            handled += done
            if done < chunk:
                break
        return handled

    def _writer_conn(self) -> Connection:
        """The writer engine's one connection, opened if it is not. It stays checked out
        between transactions (checking it out and back in costs about as much as a small
        transaction)."""
        if self._writer_connection is None:
            if self._writer_engine is None:
                self._writer_engine = engines.sqlite_writer_engine(
                    self._engine.url, fsync=self._fsync
                )
            self._writer_connection = self._writer_engine.connect()
        return self._writer_connection

    def _on_writer(self, work: Callable[[Connection], T]) -> T:
        # On the writer thread, which alone uses the writer connection while it has calls to
        # run.
        conn = self._writer_conn()
        return self._committed(conn, conn.begin, work)

    def _committed(
        self,
        conn: Connection,
        begin: Callable[[], RootTransaction],
        work: Callable[[Connection], T],
    ) -> T:
        """``work`` in the transaction ``begin`` starts on the writer connection, committed.
        After the database's own failure the connection is closed, and the next transaction
        opens it again; the service's errors (an unknown tenant, a conflict) only roll the
        transaction back."""
        try:
            with begin():
                return work(conn)
        except BookingCacheError:
            raise
        except BaseException:
            self._drop_writer_conn(conn)
            raise

    def _on_loop(self, work: Callable[[Connection], T]) -> tuple[bool, T | None]:
        """Run a brief ``work`` on the writer connection here, on the event loop's thread,
        while the writer thread has nothing to do: (True, its result); (False, None) without
        running it when another process holds SQLite's write lock, so that the caller hands it
        to the writer thread, which waits for the lock without holding up the loop.

        What that saves is the hand-over to the writer thread and back: a wake-up of each
        thread, often on a core whose caches hold none of the other's data, and both threads
        taking turns at the interpreter lock (docs/benchmarks.md, "Intake").
        Nothing else can use the connection meanwhile: the thread is idle, and only this thread
        hands it work. Only without ``fsync``: a flush to disk per commit is for the thread."""
        conn = self._writer_conn()
        driver = conn.connection.dbapi_connection
        assert driver is not None
        # Do not wait for the write lock here: take it at once or leave it to the thread.
        driver.execute("PRAGMA busy_timeout=0")
        try:
            try:
                transaction = conn.begin()
            except BaseException as exc:
                if isinstance(exc, OperationalError) and engines.is_sqlite_busy(exc):
                    return False, None
                self._drop_writer_conn(conn)
                raise
            return True, self._committed(conn, lambda: transaction, work)
        finally:
            if self._writer_connection is conn:
                driver.execute(f"PRAGMA busy_timeout={engines.SQLITE_BUSY_TIMEOUT_MS}")

    def _drop_writer_conn(self, conn: Connection) -> None:
        self._writer_connection = None
        conn.close()

    def _close_writer(self) -> None:
        # On the writer thread: its connection, then its engine.
        if self._writer_connection is not None:
            connection, self._writer_connection = self._writer_connection, None
            connection.close()
        if self._writer_engine is not None:
            engine, self._writer_engine = self._writer_engine, None
            engine.dispose()

    def add_change_listener(self, callback: ChangeListener) -> None:
        """Call ``callback`` in this process after every commit that appended to the feed, once
        per entry, with the entry's calendar (``ChangedCalendar``: no seq)."""
        self._listeners.append(callback)

    def remove_change_listener(self, callback: ChangeListener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    def add_rooms_listener(self, callback: RoomsListener) -> None:
        """Call ``callback(tenant_id)`` in this process after every commit that wrote room links
        (put, delete, import) or deleted the tenant."""
        self._rooms_listeners.append(callback)

    def remove_rooms_listener(self, callback: RoomsListener) -> None:
        with contextlib.suppress(ValueError):
            self._rooms_listeners.remove(callback)

    def add_tenants_listener(self, callback: TenantsListener) -> None:
        """Call ``callback(tenant_id)`` in this process after every commit that created or
        deleted the tenant, changed its settings or replaced its secrets."""
        self._tenants_listeners.append(callback)

    def remove_tenants_listener(self, callback: TenantsListener) -> None:
        with contextlib.suppress(ValueError):
            self._tenants_listeners.remove(callback)

    def listen(
        self,
        channel: str,
        on_notice: Callable[[str], None],
        *,
        on_connect: Callable[[], None] | None = None,
    ) -> bool:
        """Call ``on_notice(detail)`` for every notice other processes send on ``channel``
        (``store.notices``), and ``on_connect()`` whenever listening (re)starts, when notices
        may have been missed. PostgreSQL only: False elsewhere, where polling must do."""
        if self.dialect != "postgresql":
            return False
        if self._notices is None:
            self._notices = Notices(self._dsn())
            self._notices.start()
        self._notices.subscribe(channel, on_notice, on_connect=on_connect)
        return True

    def announce(self, channel: str, detail: str = "") -> None:
        """Tell other processes' listeners on ``channel``, soon and off this path (a write
        just committed; ``notices.Announcer``). PostgreSQL only: nothing elsewhere."""
        if self.dialect != "postgresql":
            return
        if self._announcer is None:
            self._announcer = Announcer(self._dsn())
        self._announcer.announce(channel, detail)

    def companion(self, *, pool_size: int = 1) -> Self:
        """This database through a pool of its own (PostgreSQL; on SQLite this store, whose
        writes have one thread anyway): for work that must not wait behind this store's
        connections when they are all busy, such as the cluster's heartbeats and leases. The
        caller closes it."""
        if engines.is_sqlite(self._engine):
            return self
        engine = engines.create_engine(
            self._engine.url.render_as_string(hide_password=False),
            pool_size=pool_size,
            idle_transaction_s=self._idle_transaction_s,
        )
        return type(self)(
            engine, box=self._box, clock=self._clock, idle_transaction_s=self._idle_transaction_s
        )

    async def own_session(self, name: str) -> asyncpg.Connection:
        """A PostgreSQL connection outside the pool, for state bound to a session (an advisory
        lock), named ``name`` in ``pg_stat_activity``; the caller closes it."""
        try:
            connection: asyncpg.Connection = await asyncpg.connect(
                self._dsn(), timeout=5, server_settings={"application_name": name}
            )
        except Exception as exc:
            raise StoreUnavailable(f"cannot connect to the database: {exc}") from exc
        return connection

    def _dsn(self) -> str:
        """The database's URL as a plain driver connection takes it (PostgreSQL)."""
        return self._engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def unlisten(self, channel: str, on_notice: Callable[[str], None]) -> None:
        if self._notices is not None:
            self._notices.unsubscribe(channel, on_notice)

    def watch_feed(
        self, on_notice: Callable[[], None], *, on_connect: Callable[[], None] | None = None
    ) -> bool:
        """Another process's change-feed append, heard on PostgreSQL (``listen``)."""
        if on_notice in self._feed_watchers:
            return True

        def noticed(_detail: str) -> None:
            on_notice()

        if not self.listen(CHANGES_CHANNEL, noticed, on_connect=on_connect):
            return False
        self._feed_watchers[on_notice] = noticed
        return True

    def unwatch_feed(self, on_notice: Callable[[], None]) -> None:
        noticed = self._feed_watchers.pop(on_notice, None)
        if noticed is not None:
            self.unlisten(CHANGES_CHANNEL, noticed)

    @property
    def notices(self) -> Notices | None:
        """The listening connection's state (None until something listens)."""
        return self._notices

    def _notify_rooms(self, tenant_id: str) -> None:
        for listener in list(self._rooms_listeners):
            try:
                listener(tenant_id)
            except Exception:  # a listener's failure must not undo a committed write
                log.exception("rooms listener failed for %s", tenant_id)

    def _notify_tenants(self, tenant_id: str) -> None:
        for listener in list(self._tenants_listeners):
            try:
                listener(tenant_id)
            except Exception:  # a listener's failure must not undo a committed write
                log.exception("tenants listener failed for %s", tenant_id)

    def _notify(self, changes: Sequence[ChangedCalendar]) -> None:
        for change in changes:
            for listener in list(self._listeners):
                try:
                    listener(change)
                except Exception:  # a listener's failure must not undo a committed write
                    log.exception(
                        "change listener failed for %s/%s", change.tenant_id, change.mailbox
                    )

    # --- lifecycle -----------------------------------------------------------------------
    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))
        async with translate_errors():
            if not await engines.migrations_at_head(self._engine):
                raise StoreUnavailable("the database schema is not at the newest migration")

    async def close(self) -> None:
        if self._notices is not None:
            notices, self._notices = self._notices, None
            await notices.close()
        if self._announcer is not None:
            announcer, self._announcer = self._announcer, None
            await announcer.close()
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await writer.stop(self._close_writer)
        await self._engine.dispose()
