"""Run one job by id: the body of the Celery task, kept free of Celery so it reads top to bottom.

1. lock the row; return if it is gone, finished, cancelled, or rendering in another job's
   batch (a redelivered task does nothing twice); mark it running;
2. dynamic batching: claim compatible queued jobs too (same model, operation, size, steps),
   up to a number of images, waiting up to a window for more — they render in one pipeline
   call, each image with its own seed, so each equals its solo render;
3. render outside any transaction, reporting each job's progress (throttled) and dropping a
   job that is cancelled meanwhile;
4. write the PNGs (atomic renames, idempotent keys), then per job one transaction inserts the
   image rows and marks it done — or, on failure, marks it failed and refunds it;
5. publish a wake-up so the bot delivers.

A job claimed into another's batch keeps its own Celery message; when that arrives, the row
says the job is taken (`batch_leader_id`) and the task returns. If the batch's worker dies,
the leader's message is redelivered (late ack) and its task adopts the orphaned jobs again.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select, update

from engine import metrics
from engine.domain.types import GenerationKind, GenerationStatus
from engine.logs import job_context
from engine.notify import Publisher
from engine.render.jobs import RenderAborted, RenderError, RenderJob, RenderResult, batch_key
from engine.storage import ImageStore
from engine.store import repo
from engine.store.db import Database
from engine.store.models import Generation, Image, utcnow

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5
#: A job whose worker died this many times (OOM kill, hard time limit) is failed, not retried.
MAX_ATTEMPTS = 3


class Renderer(Protocol):
    model_id: str

    def render_batch(self, jobs: list[RenderJob], progress_fns: list) -> list[RenderResult | None]:
        """One pipeline call for compatible jobs; None for a job dropped (cancelled) on the way."""


@dataclass
class WorkerRuntime:
    """What a worker process holds for its lifetime (the renderer is loaded once, lazily)."""

    db: Database
    store: ImageStore
    publisher: Publisher
    renderer_factory: Any  # () -> Renderer
    max_batch_images: int = 8
    batch_wait_s: float = 0.0
    # Evaluated per runtime, i.e. in the worker process that renders (not at import).
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    _renderer: Renderer | None = None

    @property
    def renderer(self) -> Renderer:
        if self._renderer is None:
            self._renderer = self.renderer_factory()
        return self._renderer


class JobFailed(Exception):
    """A job cannot be rendered; the message is shown to the user."""


def operation_for(generation: Generation) -> str:
    kind = GenerationKind(generation.kind)
    params = generation.params or {}
    if kind == GenerationKind.UPSCALE:
        return "upscale"
    if kind == GenerationKind.BLEND:
        return "strip" if params.get("strip") else "blend"
    if "edit_toward" in params:
        return "textdiff"
    if kind == GenerationKind.VARIATION or generation.parent_image_id is not None:
        return "variation"
    return "text2image"


def render_job_from_row(session, generation: Generation, store: ImageStore) -> RenderJob:
    """Everything the renderer needs, read now, so the render runs outside any transaction."""
    params = dict(generation.params or {})
    sources_embeddings: tuple[bytes, ...] = ()
    sources_images: tuple[bytes, ...] = ()
    weights: tuple[float, ...] = ()
    operation = operation_for(generation)
    if "source_key" in params:  # an uploaded image: the worker encodes it
        try:
            sources_images = (store.get(params["source_key"]),)
        except FileNotFoundError as error:
            raise JobFailed("the uploaded image is missing from storage") from error
    elif operation in ("blend", "strip"):
        rows = {i.id: i for i in session.scalars(
            select(Image).where(Image.id.in_([s["image_id"] for s in params.get("sources", [])]))
        )}
        sources = [rows.get(s["image_id"]) for s in params.get("sources", [])]
        if len(sources) < 2 or any(i is None for i in sources):
            raise JobFailed("a source image of the blend no longer exists")
        if any(i.embedding is None for i in sources):
            raise JobFailed("a source image of the blend has no stored CLIP embedding to blend")
        sources_embeddings = tuple(i.embedding for i in sources)
        weights = tuple(float(s.get("weight", 1.0)) for s in params["sources"])
    elif generation.parent_image is not None:
        parent = generation.parent_image
        if parent.embedding is not None:
            sources_embeddings = (parent.embedding,)
        try:
            sources_images = (store.get(parent.storage_key),)
        except FileNotFoundError:
            sources_images = ()  # the embedding alone still gives a (full-strength) variation
        if not sources_embeddings and not sources_images:
            raise JobFailed("the source image is gone (no file and no stored embedding)")
    elif operation != "text2image":
        raise JobFailed("the source image no longer exists")
    return RenderJob(
        generation_id=generation.id,
        operation=operation_for(generation),
        prompt=generation.prompt,
        negative_prompt=generation.negative_prompt,
        seed=generation.seed,
        n=int(params.get("n", 4)),
        params=params,
        source_embeddings=sources_embeddings,
        source_images=sources_images,
        weights=weights,
    )


def claim(runtime: WorkerRuntime, generation_id: int) -> list[RenderJob]:
    """Lock the row, mark it running and adopt a crashed batch's orphans; [] if nothing to do."""
    failed: list[int] = []
    jobs: list[RenderJob] = []
    with runtime.db.sync_session() as session:
        generation = repo.get_generation(session, generation_id, lock=True, images=False)
        if generation is None:
            log.warning("job %s: no such row, dropping the task", generation_id)
            return []
        status = GenerationStatus(generation.status)
        if status.is_final:
            log.info("job %s: already %s, nothing to do", generation_id, status)
            return []
        if status == GenerationStatus.RUNNING:
            if generation.batch_leader_id is not None:
                log.info("job %s: rendering in job %s's batch", generation_id, generation.batch_leader_id)
                return []
            # A redelivery after the worker died mid-render (late ack + reject on worker lost).
            log.warning("job %s: was running on %s (attempt %d): rendering again",
                        generation_id, generation.worker, generation.attempts)
        orphans = session.scalars(
            select(Generation).where(Generation.batch_leader_id == generation.id,
                                     Generation.status == str(GenerationStatus.RUNNING))
            .order_by(Generation.id).with_for_update(of=Generation)
        ).unique().all()
        for row in [generation, *orphans]:
            job = _start(session, runtime, row, leader=None if row is generation else generation.id)
            if job is None:
                failed.append(row.id)
            else:
                jobs.append(job)
    for job_id in failed:
        runtime.publisher.publish(job_id, str(GenerationStatus.FAILED), 0.0)
    if not jobs or jobs[0].generation_id != generation_id:
        return jobs
    return jobs + _gather_batch(runtime, generation_id, jobs)


def _start(session, runtime: WorkerRuntime, row: Generation, *, leader: int | None) -> RenderJob | None:
    """Mark one row running on this worker; None (and the row failed) if it cannot render."""
    if row.attempts >= MAX_ATTEMPTS:
        _fail(session, row, f"the worker stopped {row.attempts} times while rendering it")
        return None
    row.status = str(GenerationStatus.RUNNING)
    if row.started_at is None:
        row.started_at = utcnow()
        metrics.JOB_SECONDS.labels(phase="queue_wait").observe(
            max(0.0, (row.started_at - row.created_at).total_seconds()))
    row.attempts += 1
    row.worker = runtime.name
    row.batch_leader_id = leader
    row.stage = "starting"
    row.progress = 0.0
    try:
        return render_job_from_row(session, row, runtime.store)
    except JobFailed as error:
        _fail(session, row, str(error))
        return None


def _gather_batch(runtime: WorkerRuntime, leader_id: int, jobs: list[RenderJob]) -> list[RenderJob]:
    """Claim compatible queued jobs into the leader's batch, up to the batch size and window."""
    key = batch_key(jobs[0])
    room = runtime.max_batch_images - sum(job.n for job in jobs)
    if room <= 0 or key[-1] is not None:  # full, or an operation that renders alone
        return []
    gathered: list[RenderJob] = []
    deadline = time.monotonic() + runtime.batch_wait_s
    while True:
        with runtime.db.sync_session() as session:
            model_id = session.get(Generation, leader_id).model_id
            # SKIP LOCKED: rows another worker is claiming right now are simply not offered.
            candidates = session.scalars(
                select(Generation)
                .where(Generation.status == str(GenerationStatus.QUEUED), Generation.model_id == model_id)
                .order_by(Generation.id).limit(32)
                .with_for_update(of=Generation, skip_locked=True)
            ).unique().all()
            for row in candidates:
                if int((row.params or {}).get("n", 4)) > room:
                    continue
                try:
                    job = render_job_from_row(session, row, runtime.store)
                except JobFailed:
                    continue  # its own task will fail it properly
                if batch_key(job) != key:
                    continue
                _start(session, runtime, row, leader=leader_id)
                gathered.append(job)
                room -= job.n
                if room <= 0:
                    break
        if room <= 0 or time.monotonic() >= deadline:
            break
        time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
    if gathered:
        log.info("job %s: batching jobs %s with it", leader_id, [j.generation_id for j in gathered])
    return gathered


class ProgressReporter:
    """Write progress to the row at most every PROGRESS_INTERVAL_S and notice cancellation."""

    def __init__(self, runtime: WorkerRuntime, generation_id: int) -> None:
        self.runtime = runtime
        self.generation_id = generation_id
        self._last = 0.0

    def __call__(self, fraction: float, stage: str) -> None:
        now = time.monotonic()
        # The end needs no write: marking the job done follows at once (and sets progress 1).
        if fraction >= 1.0 or now - self._last < PROGRESS_INTERVAL_S:
            return
        self._last = now
        with self.runtime.db.sync_session() as session:
            result = session.execute(
                update(Generation)
                .where(Generation.id == self.generation_id,
                       Generation.status == str(GenerationStatus.RUNNING))
                .values(progress=min(1.0, max(0.0, fraction)), stage=stage, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
        if result.rowcount == 0:
            log.info("job %s: no longer running (cancelled?), stopping the render", self.generation_id)
            raise RenderAborted()
        self.runtime.publisher.publish(self.generation_id, "running", fraction)


def _fail(session, generation: Generation, message: str) -> None:
    generation.status = str(GenerationStatus.FAILED)
    generation.error = message
    generation.finished_at = utcnow()
    generation.stage = None
    refunded = repo.refund(session, generation, f"render failed: {message}"[:200])
    metrics.JOBS.labels(status="failed").inc()
    metrics.FAILURES.labels(reason=metrics.failure_reason(message)).inc()
    log.warning("job %s failed (%s); refunded %d image(s)", generation.id, message, refunded)


def fail_job(runtime: WorkerRuntime, generation_id: int, message: str) -> None:
    """Mark a job failed and refund it, unless it already finished."""
    with runtime.db.sync_session() as session:
        generation = repo.get_generation(session, generation_id, lock=True, images=False)
        if generation is None or GenerationStatus(generation.status).is_final:
            return
        _fail(session, generation, message)
    runtime.publisher.publish(generation_id, str(GenerationStatus.FAILED), 0.0)


def store_result(runtime: WorkerRuntime, job: RenderJob, result: RenderResult, render_ms: int) -> str:
    """Write the files, then the rows; returns the job's final status."""
    keys = []
    for image in result.images:
        keys.append(runtime.store.put(ImageStore.key_for(job.generation_id, f"{image.index}.png"), image.png))
    grid_key = None
    if result.grid_png is not None:
        grid_key = runtime.store.put(ImageStore.key_for(job.generation_id, "grid.png"), result.grid_png)

    with runtime.db.sync_session() as session:
        generation = repo.get_generation(session, job.generation_id, lock=True, images=False)
        if generation is None or generation.status != str(GenerationStatus.RUNNING):
            status = "missing" if generation is None else generation.status
            log.info("job %s: %s while rendering, discarding the images", job.generation_id, status)
            for key in keys + ([grid_key] if grid_key else []):
                runtime.store.delete(key)
            return status
        for image, key in zip(result.images, keys, strict=True):
            session.add(Image(
                generation_id=generation.id, index=image.index, storage_key=key,
                width=image.width, height=image.height, seed=image.seed, sha256=image.sha256,
                embedding=image.embedding, embedding_dim=image.embedding_dim,
            ))
        generation.status = str(GenerationStatus.DONE)
        generation.progress = 1.0
        generation.stage = None
        generation.finished_at = utcnow()
        generation.render_ms = render_ms
        generation.grid_key = grid_key
        generation.render_info = result.info
    return str(GenerationStatus.DONE)


def run_generation(runtime: WorkerRuntime, generation_id: int) -> str:
    """Render one job (and whatever batches with it) end to end; returns what became of it."""
    with job_context(generation_id):
        return _run_generation(runtime, generation_id)


def _run_generation(runtime: WorkerRuntime, generation_id: int) -> str:
    jobs = claim(runtime, generation_id)
    if not jobs:
        return "skipped"
    for job in jobs:
        runtime.publisher.publish(job.generation_id, str(GenerationStatus.RUNNING), 0.0)
    metrics.BATCH_FILL.observe(min(1.0, sum(j.n for j in jobs) / max(1, runtime.max_batch_images)))
    started = time.perf_counter()
    try:
        reporters = [ProgressReporter(runtime, job.generation_id) for job in jobs]
        results = runtime.renderer.render_batch(jobs, reporters)
    except RenderAborted:
        metrics.JOBS.labels(status="cancelled").inc(len(jobs))
        return "aborted"
    except (JobFailed, RenderError) as error:  # the model cannot do this: say why
        for job in jobs:
            fail_job(runtime, job.generation_id, str(error))
        return "failed"
    except Exception as error:
        log.exception("jobs %s: render crashed", [job.generation_id for job in jobs])
        for job in jobs:
            fail_job(runtime, job.generation_id, _describe(error))
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
        runtime.publisher.publish(job.generation_id, status, 1.0)
        outcome[job.generation_id] = status
        metrics.JOBS.labels(status=status).inc()
        if status == str(GenerationStatus.DONE):
            metrics.IMAGES.inc(len(result.images))
        log.info("job %s %s: %d image(s) in %d ms (batch of %d)", job.generation_id, status,
                 len(result.images), render_ms, len(jobs))
    return outcome.get(generation_id, "skipped")


def _describe(error: Exception) -> str:
    """A short, user-safe reason (details stay in the worker log)."""
    name = type(error).__name__
    if name == "SoftTimeLimitExceeded":
        return "the render took longer than the time limit"
    if "out of memory" in str(error).lower():
        return "the GPU ran out of memory"
    return f"the renderer failed ({name})"
