"""What the PostgreSQL + Redis benchmarks share: a throwaway database and a clean Redis db per run,
and the percentile they report. Imported by the scripts beside it (`python bench/x.py` puts this
folder on sys.path)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

PG_ADMIN = os.environ.get("IMAGINE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextmanager
def scratch_postgres_redis(redis_url: str) -> Iterator[str]:
    """Yield the URL of a new, migrated PostgreSQL database (dropped afterwards, even with
    connections left open) after emptying the Redis db at `redis_url`."""
    import psycopg
    import redis

    from engine.store.migrate import upgrade

    name = f"imagine_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        redis.Redis.from_url(redis_url).flushdb()
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
