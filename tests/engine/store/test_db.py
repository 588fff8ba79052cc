"""Reaching the database: what counts as "unreachable", and retried worker transactions."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from engine.domain.errors import StoreUnavailable
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


async def test_bot_connections_terminated_while_idle_are_replaced(postgres_url):
    """Pooled bot connections that PostgreSQL terminated while they sat idle (a failover, a
    restart) are found dead before use and replaced: the next transactions, and a one-statement
    `run_autocommit`, simply work, as they did with SQLAlchemy's pre-ping."""
    import psycopg

    db = Database(postgres_url)

    def pid(session):
        return session.execute(text("SELECT pg_backend_pid()")).scalar()

    first = await db.run(pid)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (first,))
    second = await db.run(pid)
    assert second != first
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (second,))
    assert await db.run_autocommit(lambda session: session.execute(text("SELECT 41 + 1")).scalar()) == 42
    await db.dispose()
