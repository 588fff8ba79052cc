"""The floor under imagine-bot's per-job overhead: a bare Celery round trip on the same broker.

A no-op task on its own Celery app, a solo worker in a process of its own, Redis as broker and
result backend: `apply_async(...).get()` timed one at a time. bench/overhead.py runs it beside
imagine-bot's own submit → delivered path, so the two are compared on the same machine, in the
same run (machines of this kind differ 2.5× in absolute speed).

    python bench/celery_floor.py [--calls 200]      # prints {"p50_ms": …, "p99_ms": …}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from celery import Celery

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import percentile  # noqa: E402

REDIS = os.environ.get("IMAGINE_BENCH_FLOOR_REDIS_URL", "redis://127.0.0.1:6379/6")
WARMUP = 10


def make_app(redis_url: str) -> Celery:
    app = Celery("floor", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        worker_prefetch_multiplier=1,
        task_acks_late=True,
        worker_hijack_root_logger=False,
    )

    @app.task(name="floor.noop")
    def noop(value: int) -> int:
        return value

    return app


def run_worker(redis_url: str) -> None:
    make_app(redis_url).worker_main(
        [
            "worker",
            "--pool=solo",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            f"--hostname=floor-{os.getpid()}@%h",
        ]
    )


def measure(calls: int, redis_url: str = REDIS) -> dict:
    """Start a worker, time `calls` round trips after a warm-up, stop it; p50/p99 in ms."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    worker = subprocess.Popen(
        [sys.executable, __file__, "--worker", "--redis", redis_url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    app = make_app(redis_url)
    timings: list[float] = []
    try:
        for i in range(calls + WARMUP):
            started = time.perf_counter()
            assert app.send_task("floor.noop", args=[i]).get(timeout=60) == i
            if i >= WARMUP:
                timings.append((time.perf_counter() - started) * 1000)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    return {"p50_ms": round(statistics.median(timings), 2), "p99_ms": round(percentile(timings, 0.99), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--redis", default=REDIS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args.redis)
        return 0
    print(json.dumps(measure(args.calls, args.redis)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
