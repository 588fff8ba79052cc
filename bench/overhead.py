"""Per-job system overhead: submit → delivered, minus render time, with no model at all.

Render time is taken out by the no-op renderer (IMAGINE_RENDER_BACKEND=noop: solid 8x8 PNGs),
and what is left — validation, the quota transaction, the broker round trip, the worker's row
updates and file writes, the wake-up, the delivery sweep — is measured per job, one job at a
time, over N jobs after a warm-up.

    python bench/overhead.py [--jobs 200] [--only embedded|postgres_redis]

Prints {"embedded": {"jobs": N, "p50_ms": x, "p99_ms": y}, "postgres_redis": {...},
"celery_round_trip": {"p50_ms", "p99_ms"}, "postgres_redis_over_celery": r}.
embedded: SQLite + the SQLite broker + a worker in the same process (the demo's setup).
postgres_redis: PostgreSQL + Redis + a separate worker process (the production shape).
celery_round_trip: the floor under it, measured in the same run on the same Redis — a bare
Celery no-op task, `apply_async` → result (bench/celery_floor.py); the ratio is
postgres_redis's p50 over it (machines of this kind differ, ratios in one run do not).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scratch import percentile, scratch_postgres_redis  # noqa: E402  (bench/scratch.py)

from bot.delivery import Delivery  # noqa: E402
from bot.runtime import build_bot_runtime  # noqa: E402
from engine.config import Settings  # noqa: E402
from engine.domain.types import Actor, ImagineRequest, Platform, RenderParams  # noqa: E402

REDIS = os.environ.get("IMAGINE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
ACTOR = Actor(Platform.CONSOLE, "bench", "bench-user")
WARMUP = 10


class TimingTarget:
    platform = Platform.CONSOLE

    def __init__(self) -> None:
        self.arrivals: dict[int, float] = {}
        self.events: dict[int, asyncio.Event] = {}

    async def show_progress(self, job) -> None:
        return None

    async def deliver(self, job) -> None:
        self.arrivals[job.id] = time.perf_counter()
        self.events.setdefault(job.id, asyncio.Event()).set()


async def measure(settings: Settings, jobs: int) -> dict:
    settings.render.backend = "noop"
    settings.quota.default_daily_images = 10**6
    runtime = build_bot_runtime(settings)
    # With the embedded broker the worker runs in this process on the runtime's own Celery app,
    # exactly as `imagine-bot console` runs it (so its wake-ups reach this delivery loop).
    worker = await asyncio.to_thread(runtime.start_embedded_worker)
    target = TimingTarget()
    delivery = Delivery(runtime.deliveries, target, runtime.wakeups(), sweep_interval_s=1.0)
    await delivery.start()
    overheads: list[float] = []
    try:
        for i in range(jobs + WARMUP):
            started = time.perf_counter()
            submitted = await runtime.service.submit_imagine(
                ACTOR, ImagineRequest(f"bench {i}", params=RenderParams(n=1))
            )
            job_id = submitted.generation.id
            await asyncio.wait_for(target.events.setdefault(job_id, asyncio.Event()).wait(), 30)
            job = await runtime.deliveries.generation(job_id)
            if i >= WARMUP:
                overheads.append((target.arrivals[job_id] - started) * 1000 - (job.render_ms or 0))
    finally:
        await delivery.stop()
        if worker is not None:
            await asyncio.to_thread(worker.stop)
        await runtime.close()
    return {
        "jobs": len(overheads),
        "p50_ms": round(statistics.median(overheads), 2),
        "p99_ms": round(percentile(overheads, 0.99), 2),
    }


async def measure_embedded(jobs: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings()
        settings.paths.data_dir = Path(folder)
        settings.database.url = ""
        settings.broker.url = ""
        return await measure(settings, jobs)


async def measure_postgres_redis(jobs: int) -> dict:
    worker = None
    with scratch_postgres_redis(REDIS) as url, tempfile.TemporaryDirectory() as folder:
        settings = Settings()
        settings.paths.data_dir = Path(folder)
        settings.database.url = url
        settings.broker.url = REDIS
        env = {
            **os.environ,
            "IMAGINE_DATA_DIR": folder,
            "IMAGINE_DB_URL": url,
            "IMAGINE_BROKER_URL": REDIS,
            "IMAGINE_RENDER_BACKEND": "noop",
        }
        try:
            worker = subprocess.Popen(
                [sys.executable, "-m", "bot", "worker", "--pool", "solo", "--loglevel", "WARNING"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            return await measure(settings, jobs)
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--only", choices=["embedded", "postgres_redis"])
    args = parser.parse_args()
    result = {}
    if args.only in (None, "embedded"):
        result["embedded"] = asyncio.run(measure_embedded(args.jobs))
    if args.only in (None, "postgres_redis"):
        result["postgres_redis"] = asyncio.run(measure_postgres_redis(args.jobs))
        from celery_floor import measure as celery_round_trip  # bench/celery_floor.py

        result["celery_round_trip"] = celery_round_trip(args.jobs)
        result["postgres_redis_over_celery"] = round(
            result["postgres_redis"]["p50_ms"] / result["celery_round_trip"]["p50_ms"], 2
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
