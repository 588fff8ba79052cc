"""A job's database steps one at a time, each alone in a loop: where `overhead.py`'s time goes.

On a scratch PostgreSQL database, with the service's real code and no broker (the job queue
is a stand-in that publishes nothing, the worker is called in this process), N one-image jobs go
through the five steps a job takes, every step N times in a row:

    submit        ImagineService.submit_imagine (the bot's one transaction: checks, charge, job row)
    worker_claim  engine.worker.claiming.claim (one autocommit UPDATE … RETURNING for a queued job)
    duplicate     the same claim by a second worker for a job the first one renders: the message
                  with nothing to do that every job claimed into a batch still brings
    worker_store  engine.worker.results.store_result (the files, then one transaction for the rows)
    sweep_claim   Deliveries.claim_deliveries for one job (the delivery claim and its read)
    mark          Deliveries.mark_delivered

    python bench/db_steps.py [--jobs 150]

Prints {"jobs": N, "steps": {step: {"wall_p50_ms", "cpu_ms"}}, "round_trip_ms": r}: the median
wall time of one call and the CPU this process spent per call, with the wall time of one
PostgreSQL round trip (`SELECT 1` on the raw driver) measured beside them. The PostgreSQL
backend's own CPU is not in cpu_ms. Steps run back to back in one process on warm caches, so
they are faster here than between five busy processes (`overhead.py`); compare them with each
other and with the round trip, in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scratch import scratch_postgres_redis  # noqa: E402  (bench/scratch.py)

from bot.runtime import build_bot_runtime  # noqa: E402
from engine.config import Settings  # noqa: E402
from engine.domain.types import Actor, ImagineRequest, Platform, RenderParams  # noqa: E402

REDIS = "redis://127.0.0.1:6379/9"  # emptied, never published to (the queue below publishes nothing)
ACTOR = Actor(Platform.CONSOLE, "bench", "bench-user")
CLAIM = "db-steps"


class NoQueue:
    """The job queue without a broker: the steps measured are the database's."""

    def enqueue(self, generation_id: int, task_id: str) -> None:
        return None

    def waiting(self) -> int | None:
        return 0


class Steps:
    def __init__(self) -> None:
        self.found: dict[str, dict[str, float]] = {}

    async def time(self, name: str, calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
        walls, answers = [], []
        cpu = time.process_time()
        for call in calls:
            started = time.perf_counter()
            answers.append(await call())
            walls.append((time.perf_counter() - started) * 1000)
        self.found[name] = {
            "wall_p50_ms": round(statistics.median(walls), 3),
            "cpu_ms": round((time.process_time() - cpu) * 1000 / len(calls), 3),
        }
        return answers


async def round_trip_ms(url: str, count: int = 200) -> float:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        walls = []
        for _ in range(count):
            started = time.perf_counter()
            await connection.fetchval("SELECT 1")
            walls.append((time.perf_counter() - started) * 1000)
        return round(statistics.median(walls), 3)
    finally:
        await connection.close()


async def measure(url: str, jobs: int) -> dict:
    from engine.worker.claiming import claim
    from engine.worker.results import store_result
    from engine.worker.runtime import build_runtime

    settings = Settings()
    settings.database.url = url
    settings.database.auto_migrate = False
    settings.broker.url = REDIS
    settings.render.backend = "noop"
    settings.quota.default_daily_images = 10**7
    with tempfile.TemporaryDirectory() as folder:
        settings.paths.data_dir = Path(folder)
        bot = build_bot_runtime(settings)
        bot.service.queue = NoQueue()
        worker = build_runtime(settings)
        worker.max_batch_images = 1  # one job per claim: the step, not the batching
        steps = Steps()
        try:
            for i in range(10):  # warm: the pool's connections, prepared statements, caches
                await bot.service.submit_imagine(ACTOR, ImagineRequest(f"warm {i}", params=RenderParams(n=1)))
            submitted = await steps.time(
                "submit",
                [
                    lambda i=i: bot.service.submit_imagine(ACTOR, ImagineRequest(f"job {i}", params=RenderParams(n=1)))
                    for i in range(jobs)
                ],
            )
            ids = [job.generation.id for job in submitted]

            async def claimed(generation_id: int) -> list:
                return claim(worker, generation_id)  # sync, like the worker's task body

            batches = await steps.time("worker_claim", [lambda i=i: claimed(i) for i in ids])
            rendered = [job for batch in batches for job in batch]
            assert len(rendered) == jobs, f"{len(rendered)} of {jobs} jobs claimed"
            # The same runtime under another name: a second worker process of the same pool.
            other = replace(worker, name=f"{worker.name}-other")

            async def duplicate(generation_id: int) -> list:
                return claim(other, generation_id)

            duplicates = await steps.time("duplicate", [lambda i=i: duplicate(i) for i in ids])
            assert not any(duplicates), "a job under another worker's live lease is left alone"
            results = worker.renderer.render_batch(rendered, [lambda fraction, stage: None] * len(rendered))

            async def stored(job, result) -> str:
                return store_result(worker, job, result, 1)

            await steps.time(
                "worker_store", [lambda j=j, r=r: stored(j, r) for j, r in zip(rendered, results, strict=True)]
            )
            swept = await steps.time(
                "sweep_claim",
                [
                    lambda: bot.deliveries.claim_deliveries(Platform.CONSOLE, CLAIM, 60.0, active_since=None, limit=1)
                    for _ in ids
                ],
            )
            assert sum(len(found) for found, _ in swept) == jobs, "every job claimed for delivery once"
            await steps.time("mark", [lambda i=i: bot.deliveries.mark_delivered(i, CLAIM) for i in ids])
        finally:
            await bot.close()
            worker.db.close_sync()
        return {"jobs": jobs, "steps": steps.found, "round_trip_ms": await round_trip_ms(url)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=150)
    args = parser.parse_args()
    with scratch_postgres_redis(REDIS) as url:
        print(json.dumps(asyncio.run(measure(url, args.jobs))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
