"""Reaching the database: what counts as "unreachable", and retried worker transactions."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from engine.domain.errors import StoreUnavailable
from engine.store import db as db_module
from engine.store.db import Database, is_unavailable
from tests.conftest import PG_ADMIN_URL, require


@pytest.mark.parametrize(
    "message",
    [
        "FATAL:  sorry, too many clients already",
        "FATAL:  remaining connection slots are reserved for non-replication superuser connections",
        "FATAL:  the database system is starting up",
        "FATAL:  the database system is shutting down",
        "FATAL:  terminating connection due to administrator command",
        "server closed the connection unexpectedly",
        "ERROR:  cannot execute UPDATE in a read-only transaction",
    ],
)
def test_postgresql_refusals_mean_unavailable(message):
    """PostgreSQL refusing or dropping connections (full, starting, failing over) is
    "unavailable" — users get "try again in a minute", workers retry — not a bug."""
    assert is_unavailable(OperationalError("SELECT 1", {}, Exception(message)))


def test_query_errors_are_not_unavailability():
    """A broken query is not mistaken for an outage (it must not be retried for 30 s)."""
    assert not is_unavailable(OperationalError("SELECT", {}, Exception('column "x" does not exist')))


async def test_connection_limit_is_reported_as_unavailable():
    """A PostgreSQL that refuses a new connection for being over its limit: the bot raises
    StoreUnavailable (the "try again" message), not the generic apology."""
    require("postgres")
    import psycopg

    role = f"imagine_limited_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
    try:
        db = Database(PG_ADMIN_URL.replace("postgres@", f"{role}@", 1))
        with pytest.raises(StoreUnavailable):
            await db.run(lambda session: session.execute(text("SELECT 1")))
        await db.dispose()
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP ROLE "{role}"')


def test_retrying_gets_through_a_terminated_connection(postgres_url):
    """A worker transaction whose connection PostgreSQL terminates is run again on a new one."""
    import psycopg

    db = Database(postgres_url)
    runs = []

    def work(session):
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar()
        if not runs:
            with psycopg.connect(postgres_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        runs.append(pid)
        return session.execute(text("SELECT 41 + 1")).scalar()

    assert db.retrying(work) == 42
    assert len(runs) == 2 and runs[0] != runs[1]
    db.close_sync()


def test_retrying_gives_up_at_the_deadline(tmp_path):
    """Past its deadline the last error is raised (the caller's lease takes over from there)."""
    db = Database(f"sqlite:///{tmp_path}/missing/dir/x.db")
    with pytest.raises(OperationalError):
        db.retrying(lambda session: session.execute(text("SELECT 1")), deadline_s=0.3)


def _terminate(url: str, pid: int) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def _backend_pid(session) -> int:
    return session.execute(text("SELECT pg_backend_pid()")).scalar()


async def test_bot_connections_terminated_while_idle_are_replaced(postgres_url, monkeypatch):
    """Pooled bot connections that PostgreSQL terminated while they sat idle (a failover, a
    restart) are found dead before use and replaced: the next transactions, and a one-statement
    `run_autocommit`, simply work, as they did with SQLAlchemy's pre-ping."""
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_S", 0.05)
    db = Database(postgres_url)

    first = await db.run(_backend_pid)
    _terminate(postgres_url, first)
    await asyncio.sleep(0.1)
    second = await db.run(_backend_pid)
    assert second != first
    _terminate(postgres_url, second)
    await asyncio.sleep(0.1)
    assert await db.run_autocommit(lambda session: session.execute(text("SELECT 41 + 1")).scalar()) == 42
    await db.dispose()


async def test_connections_back_from_use_moments_ago_are_not_pinged(postgres_url, monkeypatch):
    """The ping costs a round trip: a connection used within PING_AFTER_IDLE_S goes out without
    one (the busy case), a new connection too; one idle for longer is pinged once per checkout."""
    pings = []
    real = db_module._ping_asyncpg
    monkeypatch.setattr(db_module, "_ping_asyncpg", lambda record: pings.append(1) or real(record))
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_S", 0.2)
    db = Database(postgres_url)
    for _ in range(5):
        await db.run(_backend_pid)
        await db.run_autocommit(_backend_pid)
    assert pings == []
    await asyncio.sleep(0.3)
    await db.run(_backend_pid)
    assert pings == [1]
    await db.dispose()


async def test_connection_terminated_moments_after_use_fails_once_then_the_pool_is_replaced(postgres_url):
    """The price of not pinging busy connections: one terminated within a second of its last use
    (a failover at that moment) fails its next transaction like one running during the failover
    — StoreUnavailable, the "try again" message, nothing written — and SQLAlchemy then
    invalidates the pool, so the transaction after it works on a new connection."""
    db = Database(postgres_url)
    async with db.async_engine.connect() as one, db.async_engine.connect() as two:
        # two connections in the pool, both used just now
        pids = {(await c.execute(text("SELECT pg_backend_pid()"))).scalar() for c in (one, two)}
    assert len(pids) == 2
    for pid in pids:
        _terminate(postgres_url, pid)
    with pytest.raises(StoreUnavailable):
        await db.run(_backend_pid)
    assert await db.run(_backend_pid) not in pids
    await db.dispose()
