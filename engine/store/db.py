"""Engines and sessions for SQLite and PostgreSQL, async (bots) and sync (worker, migrations).

Repository functions take a sync `Session`. The bots run them through `Database.run`, which
uses `AsyncSession.run_sync` (the queries run on the async driver without blocking the event
loop); the worker calls them inside `Database.sync_session()`. One copy of every query.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, CursorResult, Engine, Result, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.util import await_only

from engine.domain.errors import StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
_SYNC_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}


def rowcount(result: Result[*tuple[Any, ...]]) -> int:
    """The number of rows an UPDATE or DELETE matched. `Session.execute` is typed to return a
    plain `Result`, but a DML statement's result is a `CursorResult`, which carries the count."""
    return cast("CursorResult[*tuple[Any, ...]]", result).rowcount


def _backend(url: str) -> str:
    return make_url(url).get_backend_name()


def async_url(url: str) -> str:
    """The same database, named with its asyncio driver."""
    parsed = make_url(url)
    return parsed.set(drivername=_ASYNC_DRIVERS[parsed.get_backend_name()]).render_as_string(hide_password=False)


def sync_url(url: str) -> str:
    """The same database, named with its blocking driver."""
    parsed = make_url(url)
    return parsed.set(drivername=_SYNC_DRIVERS[parsed.get_backend_name()]).render_as_string(hide_password=False)


def _configure_sqlite(engine: Engine) -> None:
    """Make SQLite transactions real: WAL, a busy timeout, and BEGIN IMMEDIATE.

    pysqlite delays BEGIN until the first write and SQLite ignores SELECT ... FOR UPDATE, so two
    concurrent read-then-write transactions would both succeed and lose an update. BEGIN
    IMMEDIATE takes the write lock up front: concurrent writers queue on busy_timeout instead.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


#: SQLSTATEs that mean "no database to talk to right now": connection exceptions (class 08),
#: too many connections, shutdown / crash / not accepting connections yet, and a read-only
#: transaction (a replica that is not, or not yet, the primary after a failover).
UNAVAILABLE_SQLSTATES = ("08", "53300", "57P01", "57P02", "57P03", "25006")
UNAVAILABLE_PHRASES = (
    "connect",
    "connection",
    "unable to open database",
    "server closed",
    "terminating",
    "could not translate host",
    "timeout",
    "too many clients",
    "too many connections",
    "remaining connection slots",
    "the database system is",
    "cannot execute",  # ... in a read-only transaction
    "database is locked",
)


def _sqlstate(error: BaseException) -> str:
    """The SQLSTATE behind a driver error (psycopg and asyncpg name it differently)."""
    seen: BaseException | None = error
    while seen is not None:
        state = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(state, str):
            return state
        seen = seen.__cause__
    return ""


def is_unavailable(error: BaseException) -> bool:
    """Whether an exception means "the database cannot be reached" (not a bug in a query)."""
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        orig = getattr(error, "orig", None)
        if orig is not None and _sqlstate(orig).startswith(UNAVAILABLE_SQLSTATES):
            return True
        if isinstance(error, (OperationalError, InterfaceError)) or type(error) is DBAPIError:
            # asyncpg's connection refusals arrive as plain DBAPIError.
            text = str(orig if orig is not None else error).lower()
            return any(phrase in text for phrase in UNAVAILABLE_PHRASES)
        return False
    return isinstance(error, (ConnectionError, TimeoutError)) or (
        isinstance(error, OSError) and error.errno is not None
    )


class Database:
    """One database: an async engine for the bots, a sync engine for the worker and alembic."""

    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int = 20, echo: bool = False) -> None:
        self.url = url
        self.backend = _backend(url)
        self._pool = (
            {}
            if self.backend == "sqlite"
            else {
                "pool_size": pool_size,
                "max_overflow": max_overflow,
            }
        )
        self._echo = echo
        self._async_engine: AsyncEngine | None = None
        self._sync_engine: Engine | None = None
        # A forked child (a prefork worker) must not use, or close, its parent's connections.
        os.register_at_fork(after_in_child=_forget_connections_after_fork(weakref.ref(self)))

    @property
    def async_engine(self) -> AsyncEngine:
        if self._async_engine is None:
            connect_args = {"timeout": 5} if self.backend == "postgresql" else {}
            self._async_engine = create_async_engine(
                async_url(self.url), echo=self._echo, connect_args=connect_args, **self._pool
            )
            if self.backend == "sqlite":
                _configure_sqlite(self._async_engine.sync_engine)
            else:
                _ping_idle_connections(self._async_engine.sync_engine, _ping_asyncpg)
            self._async_sessions = async_sessionmaker(self._async_engine, expire_on_commit=False)
            # PostgreSQL connections without BEGIN/COMMIT (`run_autocommit`).
            self._async_autocommit = async_sessionmaker(
                self._async_engine.execution_options(isolation_level="AUTOCOMMIT")
                if self.backend == "postgresql"
                else self._async_engine,
                expire_on_commit=False,
            )
        return self._async_engine

    @property
    def sync_engine(self) -> Engine:
        if self._sync_engine is None:
            connect_args = {"connect_timeout": 5} if self.backend == "postgresql" else {}
            self._sync_engine = create_engine(
                sync_url(self.url), echo=self._echo, connect_args=connect_args, **self._pool
            )
            if self.backend == "sqlite":
                _configure_sqlite(self._sync_engine)
            else:
                _ping_idle_connections(self._sync_engine, _dialect_ping(self._sync_engine))
            self._sync_sessions = sessionmaker(self._sync_engine, expire_on_commit=False)
            # PostgreSQL connections without BEGIN/COMMIT (`sync_session(autocommit=True)`).
            self._sync_autocommit = sessionmaker(
                self._sync_engine.execution_options(isolation_level="AUTOCOMMIT")
                if self.backend == "postgresql"
                else self._sync_engine,
                expire_on_commit=False,
            )
        return self._sync_engine

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run `fn(session, *args, **kwargs)` in one transaction from async code.

        Raises StoreUnavailable (a user-facing error) when the database cannot be reached;
        anything else `fn` raises propagates after the transaction is rolled back.
        """
        self.async_engine  # noqa: B018 - builds the session factory on first use
        return await self._run_in(self._async_sessions, fn, *args, **kwargs)

    async def run_autocommit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Like `run`, for an `fn` whose statements each stand on their own — a single
        UPDATE … WHERE, or a claim (UPDATE … RETURNING) and then reads of what it claimed: on
        PostgreSQL it runs on an autocommit connection, each statement its own transaction, so
        BEGIN and COMMIT cost no round trips. SQLite takes the ordinary way (its BEGIN
        IMMEDIATE is what serialises writers)."""
        self.async_engine  # noqa: B018 - builds the session factories on first use
        return await self._run_in(self._async_autocommit, fn, *args, **kwargs)

    @staticmethod
    async def _run_in(sessions: Callable[[], Any], fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """`fn` in one session of `sessions` (ordinary or autocommit); unreachable → StoreUnavailable."""
        try:
            async with sessions() as session, session.begin():
                return await session.run_sync(fn, *args, **kwargs)
        except Exception as error:
            if is_unavailable(error):
                log.warning("database unreachable: %s", error)
                raise StoreUnavailable() from error
            raise

    def retrying(
        self, fn: Callable[..., T], /, *args: Any, deadline_s: float = 30.0, autocommit: bool = False, **kwargs: Any
    ) -> T:
        """Run `fn(session, *args, **kwargs)` in one transaction, again and again while the
        database is unreachable (a failover, a terminated connection), for up to `deadline_s`.

        `fn` must be safe to run twice: a commit whose answer was lost may have happened. The
        last error is raised when the deadline passes; errors that are not about reaching the
        database are raised at once.
        """
        deadline = time.monotonic() + deadline_s
        delay = 0.05
        while True:
            try:
                with self.sync_session(autocommit=autocommit) as session:
                    return fn(session, *args, **kwargs)
            except Exception as error:
                if not is_unavailable(error) or time.monotonic() + delay > deadline:
                    raise
                log.warning("database unreachable (%s); retrying in %.2f s", str(error).splitlines()[0][:200], delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    @contextmanager
    def sync_session(self, *, autocommit: bool = False) -> Iterator[Session]:
        """A session in one transaction, committed on success (the worker's way in).

        `autocommit`: for work whose statements each stand on their own (a claim in one
        `UPDATE … RETURNING`, then reads): on PostgreSQL each statement is its own transaction,
        so BEGIN and COMMIT cost no round trips. SQLite takes the ordinary way."""
        self.sync_engine  # noqa: B018
        sessions = self._sync_autocommit if autocommit else self._sync_sessions
        with sessions() as session, session.begin():
            yield session

    def close_sync(self) -> None:
        """Close the blocking engine's connections (the worker side's way out)."""
        if self._sync_engine is not None:
            self._sync_engine.dispose()

    async def dispose(self) -> None:
        if self._async_engine is not None:
            await self._async_engine.dispose()
        if self._sync_engine is not None:
            self._sync_engine.dispose()


#: A pooled connection idle for longer than this is pinged before it is handed out.
PING_AFTER_IDLE_S = 1.0


def _ping_idle_connections(engine: Engine, ping: Callable[[ConnectionPoolEntry], Any]) -> None:
    """Pessimistic disconnect handling, for connections that sat idle: one round trip (`ping`)
    before handing out a connection that came back to the pool more than PING_AFTER_IDLE_S ago.

    SQLAlchemy's pre-ping pays that round trip before every transaction (and for asyncpg wraps
    it in BEGIN … ROLLBACK: three) — a fifth of a job's database time on a busy bot or worker.
    A connection in use within the last second was alive then; if the database fails over in
    that second, the first statement fails like one running during the failover would:
    StoreUnavailable for the bots, another try in `Database.retrying` for the worker. SQLAlchemy
    then invalidates the whole pool, so the other connections are replaced, not tried one by one.
    A dead connection fails its ping with DisconnectionError: the pool discards it and checks out
    another, as with pre-ping."""

    @event.listens_for(engine, "checkin")
    def returned(_dbapi_connection: DBAPIConnection | None, record: ConnectionPoolEntry) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def check(_dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection) -> None:
        returned_at = record.info.get("returned_at")
        if returned_at is None or time.monotonic() - returned_at <= PING_AFTER_IDLE_S:
            return  # new, or back from use moments ago
        try:
            ping(record)
        except Exception as error:
            raise DisconnectionError(f"connection failed its ping: {error!r}") from error


def _dialect_ping(engine: Engine) -> Callable[[ConnectionPoolEntry], Any]:
    """The dialect's own ping (psycopg's: one round trip)."""

    def ping(record: ConnectionPoolEntry) -> None:
        if record.dbapi_connection is None:
            raise DisconnectionError("no connection to check")
        engine.dialect.do_ping(record.dbapi_connection)

    return ping


def _ping_asyncpg(record: ConnectionPoolEntry) -> None:
    """asyncpg's ping: an empty query, without the BEGIN … ROLLBACK of the dialect's own."""
    driver = record.driver_connection
    if driver is None:
        raise DisconnectionError("no connection to check")
    await_only(driver.fetchrow(";"))


def _forget_connections_after_fork(ref: weakref.ref[Database]) -> Callable[[], None]:
    def forget() -> None:
        db = ref()
        if db is not None and db._sync_engine is not None:
            db._sync_engine.dispose(close=False)

    return forget
