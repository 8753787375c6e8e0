"""The plumbing under ``SqlStore``: error translation, read and write transactions, and the
in-process listeners told about committed changes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, StaticPool

from bookingcache.clock import Clock, SystemClock
from bookingcache.errors import BookingCacheError, InvalidInput, StoreUnavailable
from bookingcache.store import engine as engines
from bookingcache.store.notices import Announcer, Notices
from bookingcache.store.port import CalendarChange

log = logging.getLogger(__name__)

ChangeListener = Callable[[CalendarChange], None]
RoomsListener = Callable[[str], None]
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
    except sqlite3.OperationalError as exc:  # the SQLite writer's own statements (write_sqlite)
        raise StoreUnavailable(f"the database failed: {exc}") from exc
    except (OSError, TimeoutError) as exc:
        raise StoreUnavailable(f"the database is not reachable: {exc}") from exc


class SqlBase:
    """Engine, transactions and in-process listeners; ``SqlStore`` adds the store's operations.

    ``read()`` and ``write()`` are also the seam other adapters over the same database use
    (the sync queue, the subscription registry), so every write takes the same path.
    """

    def __init__(
        self, engine: AsyncEngine, *, clock: Clock | None = None, fsync: bool = False
    ) -> None:
        self._engine = engine
        # SQLite: the engine flushes every commit to disk (``engines.create_engine``'s
        # ``fsync``); the writer thread's own engine must do the same.
        self._fsync = fsync
        self._clock = clock or SystemClock()
        self._write_lock = asyncio.Lock() if engines.is_sqlite(engine) else None
        # SQLite only: a synchronous engine on one thread of its own for ``write_at_once``.
        self._sync_engine: Engine | None = None
        self._sync_thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._sync_raw: PoolProxiedConnection | None = None
        self._listeners: list[ChangeListener] = []
        self._rooms_listeners: list[RoomsListener] = []
        # PostgreSQL: the connection listening for other processes' notices, once asked for,
        # and the sender of notices announced after a commit.
        self._notices: Notices | None = None
        self._announcer: Announcer | None = None

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

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
        """A connection for reads (a deferred transaction on SQLite, rolled back after)."""
        async with translate_errors(), contextlib.AsyncExitStack() as stack:
            yield await self._connect(stack)

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction, committed when the block ends without an error."""
        async with contextlib.AsyncExitStack() as stack:
            if self._write_lock is not None:
                await stack.enter_async_context(self._write_lock)
            await stack.enter_async_context(translate_errors())
            conn = await self._connect(stack)
            await conn.execution_options(**{engines.WRITE_OPTION: True})
            await stack.enter_async_context(conn.begin())
            yield conn

    async def write_at_once(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` (synchronous SQLAlchemy statements) as ONE write transaction, committed
        when it returns; the same transaction semantics as ``write()``.

        On SQLite the whole transaction runs in a single hand-off to a writer thread of its own
        (``BEGIN IMMEDIATE``, the statements, ``COMMIT``), where ``write()`` hands every
        statement over to the driver's thread and back; it waits on the same in-process write
        lock. On PostgreSQL ``work`` runs inside ``write()``."""
        if self._write_lock is None:
            async with self.write() as conn:
                return await conn.run_sync(work)
        return await self._on_writer(self._sqlite_write, work)

    async def write_sqlite(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """SQLite only: ``write_at_once`` with ``work`` given the writer thread's own sqlite3
        connection inside ``BEGIN IMMEDIATE`` ... ``COMMIT``, without the SQL layer's
        per-transaction machinery (connection checkout, events, transaction objects), for a
        transaction that runs hundreds of times a second (the webhook's group commit)."""
        if self._write_lock is None:
            raise RuntimeError("write_sqlite is for SQLite databases")
        return await self._on_writer(self._sqlite_write_raw, work)

    async def _on_writer(self, run: Callable[[Callable[[Any], T]], T], work: Any) -> T:
        assert self._write_lock is not None
        async with self._write_lock, translate_errors():
            loop = asyncio.get_running_loop()
            running = loop.run_in_executor(self._sqlite_thread(), run, work)
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                # Hold the write lock until the transaction on the thread has ended.
                with contextlib.suppress(Exception):
                    await running
                raise

    async def write_through(self, body: Callable[[AsyncConnection], Coroutine[Any, Any, T]]) -> T:
        """Run ``body`` as ONE write transaction, like ``async with write() as conn: return
        await body(conn)``. On SQLite the whole of it runs in one go on the writer thread of
        ``write_at_once``: ``body`` gets a connection whose statements complete at once, so it
        must await nothing but that connection's ``execute``/``scalar``."""
        if self._write_lock is None:
            async with self.write() as conn:
                return await body(conn)
        return await self.write_at_once(
            lambda sync: _run_to_end(body(cast(AsyncConnection, _Immediate(sync))))
        )

    def _sqlite_thread(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._sync_thread is None:
            self._sync_thread = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="bookingcache-sqlite-writer"
            )
        return self._sync_thread

    def _sqlite_write(self, work: Callable[[Connection], T]) -> T:
        # Runs on the writer thread, which alone creates and uses its one connection.
        with self._sqlite_sync().connect() as conn, conn.begin():
            return work(conn)

    def _sqlite_write_raw(self, work: Callable[[sqlite3.Connection], T]) -> T:
        # The writer thread's connection (the sync engine's pool holds exactly one), used
        # directly; transactions on it never interleave, since this thread runs one at a time.
        if self._sync_raw is None:
            self._sync_raw = self._sqlite_sync().raw_connection()
        raw = self._sync_raw.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        raw.execute("BEGIN IMMEDIATE")
        try:
            result = work(raw)
        except BaseException:
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            raise
        raw.execute("COMMIT")
        return result

    def _sqlite_sync(self) -> Engine:
        if self._sync_engine is None:
            self._sync_engine = _sqlite_sync_engine(self._engine, fsync=self._fsync)
        return self._sync_engine

    def add_change_listener(self, callback: ChangeListener) -> None:
        """Call ``callback`` in this process after every commit that appended to the feed."""
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

    def _dsn(self) -> str:
        """The database's URL as a plain driver connection takes it (PostgreSQL)."""
        return self._engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def unlisten(self, channel: str, on_notice: Callable[[str], None]) -> None:
        if self._notices is not None:
            self._notices.unsubscribe(channel, on_notice)

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

    def _notify(self, changes: Sequence[CalendarChange]) -> None:
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
        if self._sync_thread is not None:
            thread, self._sync_thread = self._sync_thread, None
            if self._sync_raw is not None:
                raw, self._sync_raw = self._sync_raw, None
                await asyncio.get_running_loop().run_in_executor(thread, raw.close)
            if self._sync_engine is not None:
                sync_engine, self._sync_engine = self._sync_engine, None
                await asyncio.get_running_loop().run_in_executor(thread, sync_engine.dispose)
            thread.shutdown(wait=False)
        await self._engine.dispose()


class _Immediate:
    """The part of ``AsyncConnection`` the store's transaction bodies use, over a synchronous
    connection: every statement has completed when its ``await`` is reached."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    @property
    def dialect(self) -> Any:
        return self._conn.dialect

    async def execute(self, statement: Any, parameters: Any = None, **options: Any) -> Any:
        return self._conn.execute(statement, parameters, **options)

    async def scalar(self, statement: Any, parameters: Any = None, **options: Any) -> Any:
        return self._conn.scalar(statement, parameters, **options)


def _run_to_end(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends (its awaits all complete at once)."""
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return cast(T, finished.value)
    coroutine.close()
    raise RuntimeError("a transaction body waited on something other than its connection")


def _sqlite_sync_engine(engine: AsyncEngine, *, fsync: bool) -> Engine:
    """The stdlib sqlite3 driver on the same database file, with the same connection settings
    as ``store.engine`` gives the async engine, for write transactions only."""
    sync = create_engine(
        engine.url.set(drivername="sqlite+pysqlite"),
        poolclass=StaticPool,
        connect_args={"timeout": engines.SQLITE_BUSY_TIMEOUT_MS / 1000},
    )

    @event.listens_for(sync, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={engines.sqlite_synchronous(fsync)}")
            cursor.execute(f"PRAGMA busy_timeout={engines.SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(sync, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return sync
