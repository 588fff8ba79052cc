"""Run one job by id: the body of the Celery task, kept free of Celery so it reads top to bottom.

1. claim it (engine/worker/claiming.py): lock the row; return if it is gone or finished, or if
   another worker holds a live lease on it (a redelivered or duplicate message does nothing
   twice); mark it running on this worker; then dynamic batching: claim compatible queued jobs
   too (same model, operation, size, steps), up to a number of images, waiting up to a window
   for more — they render in one pipeline call, each image with its own seed, so each equals its
   solo render;
2. render outside any transaction, renewing every job's lease from a heartbeat thread
   (engine/worker/lease.py), reporting progress (throttled) and dropping a job that is cancelled
   meanwhile;
3. store each job (engine/worker/results.py): write the PNGs (atomic renames, file names per
   claim), then per job one transaction inserts the image rows and marks it done — or, on
   failure, marks it failed and refunds it;
4. publish a wake-up so the bot delivers.

Every database step is retried while the database is unreachable (a failover, a terminated
connection) and is safe to run twice. Whatever still goes wrong — the worker SIGKILLed, OOM-killed,
its machine gone, the database down for longer than the retries — leaves running jobs whose
lease stops being renewed: the sweeper of any live worker (engine/worker/recovery.py) puts them
back on the queue within `lease_s` + `sweep_interval_s`. A job claimed into another's batch keeps
its own Celery message; when that arrives the row shows the leader's live lease and the task
returns, and if the batch's worker dies, each of its jobs is swept back on its own.
"""

from __future__ import annotations

import logging
import time

from engine import faults, metrics
from engine.domain.types import GenerationStatus
from engine.logs import job_context
from engine.render.types import ProgressFn, RenderAborted, RenderError, RenderJob
from engine.store.db import is_unavailable
from engine.worker.claiming import JobFailed, claim
from engine.worker.results import ProgressReporter, fail_job, store_result
from engine.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


def run_generation(runtime: WorkerRuntime, generation_id: int) -> str:
    """Render one job (and whatever batches with it) end to end; returns what became of it."""
    with job_context(generation_id):
        return _run_generation(runtime, generation_id)


def _run_generation(runtime: WorkerRuntime, generation_id: int) -> str:
    jobs = claim(runtime, generation_id)
    if not jobs:
        return "skipped"
    with runtime.heartbeat.holding([job.generation_id for job in jobs]):
        return _render_and_store(runtime, generation_id, jobs)


def _render_and_store(runtime: WorkerRuntime, generation_id: int, jobs: list[RenderJob]) -> str:
    for job in jobs:
        runtime.publisher.publish(job.generation_id, str(GenerationStatus.RUNNING), 0.0)
    metrics.BATCH_FILL.observe(min(1.0, sum(j.n for j in jobs) / max(1, runtime.max_batch_images)))
    started = time.perf_counter()
    try:
        reporters: list[ProgressFn] = [ProgressReporter(runtime, job) for job in jobs]
        results = runtime.renderer.render_batch(jobs, reporters)
    except RenderAborted:
        metrics.JOBS.labels(status="cancelled").inc(len(jobs))
        return "aborted"
    except (JobFailed, RenderError) as error:  # the model cannot do this: say why
        for job in jobs:
            fail_job(runtime, job, str(error))
        return "failed"
    except Exception as error:
        if is_unavailable(error):
            raise  # not the job's fault: its lease runs out and it is rendered again
        log.exception("jobs %s: render crashed", [job.generation_id for job in jobs])
        for job in jobs:
            fail_job(runtime, job, _describe(error))
        return "failed"
    render_ms = round((time.perf_counter() - started) * 1000)
    metrics.JOB_SECONDS.labels(phase="render").observe(render_ms / 1000)
    memory = getattr(runtime.renderer, "gpu_memory_bytes", None)
    if memory is not None:
        metrics.GPU_MEMORY.set(memory())
    outcome = {}
    for job, result in zip(jobs, results, strict=True):
        if result is None:
            outcome[job.generation_id] = "aborted"
            metrics.JOBS.labels(status="cancelled").inc()
            continue
        status = store_result(runtime, job, result, render_ms)
        faults.point("worker.after_store")
        runtime.publisher.publish(job.generation_id, status, 1.0)
        outcome[job.generation_id] = status
        metrics.JOBS.labels(status=status).inc()
        if status == str(GenerationStatus.DONE):
            metrics.IMAGES.inc(len(result.images))
        log.info(
            "job %s %s: %d image(s) in %d ms (batch of %d)",
            job.generation_id,
            status,
            len(result.images),
            render_ms,
            len(jobs),
        )
    return outcome.get(generation_id, "skipped")


def _describe(error: Exception) -> str:
    """A short, user-safe reason (details stay in the worker log)."""
    name = type(error).__name__
    if name == "SoftTimeLimitExceeded":
        return "the render took longer than the time limit"
    if "out of memory" in str(error).lower():
        return "the GPU ran out of memory"
    return f"the renderer failed ({name})"
