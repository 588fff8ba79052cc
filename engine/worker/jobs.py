"""Run one job by id: the body of the Celery task, kept free of Celery so it reads top to bottom.

1. lock the row; return if it is gone or finished, or if another worker holds a live lease on it
   (a redelivered or duplicate message does nothing twice); mark it running on this worker;
2. dynamic batching: claim compatible queued jobs too (same model, operation, size, steps),
   up to a number of images, waiting up to a window for more — they render in one pipeline
   call, each image with its own seed, so each equals its solo render;
3. render outside any transaction, renewing every job's lease from a heartbeat thread,
   reporting progress (throttled) and dropping a job that is cancelled meanwhile;
4. write the PNGs (atomic renames, file names per claim), then per job one transaction inserts
   the image rows and marks it done — or, on failure, marks it failed and refunds it;
5. publish a wake-up so the bot delivers.

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
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session, lazyload

from engine import faults, metrics
from engine.domain.types import GenerationKind, GenerationStatus
from engine.image_files import ImageStore
from engine.logs import job_context
from engine.notify import Publisher
from engine.render.types import ProgressFn, RenderAborted, RenderError, RenderJob, RenderResult, batch_key
from engine.store import repo
from engine.store.db import Database, is_unavailable, rowcount
from engine.store.models import Generation, Image, utcnow

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5
#: A job whose worker died this many times (OOM kill, hard time limit) is failed, not retried.
MAX_ATTEMPTS = 3


class Renderer(Protocol):
    model_id: str

    def render_batch(self, jobs: list[RenderJob], progress_fns: list[ProgressFn]) -> list[RenderResult | None]:
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
    heartbeat_s: float = 5.0
    lease_s: float = 20.0
    max_attempts: int = MAX_ATTEMPTS
    # Evaluated per runtime, i.e. in the worker process that renders (not at import).
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    _renderer: Renderer | None = None
    _heartbeat: Heartbeat | None = None

    @property
    def heartbeat(self) -> Heartbeat:
        if self._heartbeat is None:
            self._heartbeat = Heartbeat(self.db, self.name, self.heartbeat_s)
        return self._heartbeat

    @property
    def renderer(self) -> Renderer:
        if self._renderer is None:
            self._renderer = self.renderer_factory()
        return self._renderer


class Heartbeat:
    """Renews the lease of every job this process is rendering, from a thread of its own, so a
    render that spends minutes inside one model call still shows a live worker."""

    def __init__(self, db: Database, worker: str, interval_s: float) -> None:
        self.db = db
        self.worker = worker
        self.interval_s = interval_s
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def holding(self, generation_ids: list[int]) -> Iterator[None]:
        with self._lock:
            self._held.update(generation_ids)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="imagine-heartbeat", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._held.difference_update(generation_ids)

    def beat(self) -> int:
        """Renew the held jobs' leases now; returns how many rows were renewed."""
        with self._lock:
            held = sorted(self._held)
        if not held:
            return 0
        return self.db.retrying(_renew_leases, held, self.worker, deadline_s=self.interval_s)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            try:
                self.beat()
            except Exception as error:  # noqa: BLE001 - the next beat tries again; the lease is long
                log.warning("heartbeat not written: %s", str(error).splitlines()[0][:200])


def _renew_leases(session: Session, generation_ids: list[int], worker: str) -> int:
    result = session.execute(
        update(Generation)
        .where(
            Generation.id.in_(generation_ids),
            Generation.worker == worker,
            Generation.status == str(GenerationStatus.RUNNING),
        )
        # updated_at stays: a heartbeat is not a change the delivery loop needs to look at.
        .values(heartbeat_at=utcnow(), updated_at=Generation.updated_at)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


def lease_live(generation: Generation, lease_s: float, now: datetime | None = None) -> bool:
    """Whether the worker that last claimed this running job renewed its lease recently."""
    beat = generation.heartbeat_at or generation.started_at
    return beat is not None and beat > (now or utcnow()) - timedelta(seconds=lease_s)


class JobFailed(Exception):
    """A job cannot be rendered; the message is shown to the user."""


def operation_for(generation: Generation) -> str:
    kind = GenerationKind(generation.kind)
    params = generation.params or {}
    if kind == GenerationKind.UPSCALE:
        return "upscale"
    if kind == GenerationKind.BLEND:
        return "strip" if params.get("strip") else "blend"
    if "edit" in params:  # an edit, zoom-out or pan (or a reroll of one)
        return "edit"
    if "edit_toward" in params:
        return "textdiff"
    if kind == GenerationKind.VARIATION or generation.parent_image_id is not None:
        return "variation"
    return "text2image"


def render_job_from_row(session: Session, generation: Generation, store: ImageStore) -> RenderJob:
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
        rows = {
            i.id: i
            for i in session.scalars(
                select(Image).where(Image.id.in_([s["image_id"] for s in params.get("sources", [])]))
            )
        }
        found = [rows.get(s["image_id"]) for s in params.get("sources", [])]
        sources = [i for i in found if i is not None]
        if len(found) < 2 or len(sources) < len(found):
            raise JobFailed("a source image of the blend no longer exists")
        embeddings = [i.embedding for i in sources]
        if any(e is None for e in embeddings):
            raise JobFailed("a source image of the blend has no stored CLIP embedding to blend")
        sources_embeddings = tuple(e for e in embeddings if e is not None)
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
        attempt=generation.attempts,
    )


def claim(runtime: WorkerRuntime, generation_id: int) -> list[RenderJob]:
    """Lock the row and mark it running on this worker, plus a batch; [] if nothing to do."""
    job, failed, gathered = runtime.db.retrying(_claim_row, runtime, generation_id)
    if failed:
        metrics.JOBS.labels(status="failed").inc()
        runtime.publisher.publish(generation_id, str(GenerationStatus.FAILED), 0.0)
    if job is None:
        return []
    jobs = [job, *gathered]
    if runtime.batch_wait_s > 0:
        jobs += _gather_batch(runtime, generation_id, jobs)
    elif gathered:
        log.info("job %s: batching jobs %s with it", generation_id, [j.generation_id for j in gathered])
    return jobs


def _claim_row(
    session: Session, runtime: WorkerRuntime, generation_id: int
) -> tuple[RenderJob | None, bool, list[RenderJob]]:
    """(the job to render or None, whether it was failed instead, the jobs batched with it) —
    safe to run twice. The first look for a batch is in the same transaction: one round trip
    fewer per job (a retried claim just renders without them; their lease brings them back)."""
    generation = repo.get_generation(session, generation_id, lock=True, images=False)
    if generation is None:
        log.warning("job %s: no such row, dropping the task", generation_id)
        return None, False, []
    status = GenerationStatus(generation.status)
    if status.is_final:
        log.info("job %s: already %s, nothing to do", generation_id, status)
        return None, False, []
    if status == GenerationStatus.RUNNING:
        if lease_live(generation, runtime.lease_s):
            if generation.worker == runtime.name and generation.batch_leader_id is None:
                # Our own claim, committed although its answer was lost: go on with it.
                return render_job_from_row(session, generation, runtime.store), False, []
            log.info(
                "job %s: rendering on %s%s (lease live); this message is a duplicate",
                generation_id,
                generation.worker,
                f" in job {generation.batch_leader_id}'s batch" if generation.batch_leader_id else "",
            )
            return None, False, []
        log.warning(
            "job %s: %s stopped renewing its lease (attempt %d): rendering it here",
            generation_id,
            generation.worker,
            generation.attempts,
        )
    job = _start(session, runtime, generation, leader=None)
    if job is None:
        return None, True, []
    key = batch_key(job)
    room = runtime.max_batch_images - job.n
    gathered = _gather_once(session, runtime, generation_id, key, room) if room > 0 and key[-1] is None else []
    return job, False, gathered


def _start(session: Session, runtime: WorkerRuntime, row: Generation, *, leader: int | None) -> RenderJob | None:
    """Mark one row running on this worker; None (and the row failed) if it cannot render."""
    if row.attempts >= runtime.max_attempts:
        _fail(session, row, f"the worker stopped {row.attempts} times while rendering it")
        return None
    row.status = str(GenerationStatus.RUNNING)
    row.heartbeat_at = utcnow()
    if row.started_at is None:
        row.started_at = utcnow()
        metrics.JOB_SECONDS.labels(phase="queue_wait").observe(
            max(0.0, (row.started_at - row.created_at).total_seconds())
        )
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
        try:
            with runtime.db.sync_session() as session:
                claimed = _gather_once(session, runtime, leader_id, key, room)
        except Exception as error:
            if not is_unavailable(error):
                raise
            # Render what is claimed; rows of a commit whose answer was lost are swept back to
            # the queue when their lease runs out.
            log.warning("job %s: no batch this time (%s)", leader_id, str(error).splitlines()[0][:200])
            break
        gathered += claimed
        room -= sum(job.n for job in claimed)
        if room <= 0 or time.monotonic() >= deadline:
            break
        time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
    if gathered:
        log.info("job %s: batching jobs %s with it", leader_id, [j.generation_id for j in [*jobs[1:], *gathered]])
    return gathered


def _gather_once(
    session: Session, runtime: WorkerRuntime, leader_id: int, key: tuple[Any, ...], room: int
) -> list[RenderJob]:
    """One look at the queue: claim what fits into the leader's batch."""
    leader = session.get(Generation, leader_id)
    assert leader is not None  # this worker holds the leader's claim: its row is there
    model_id = leader.model_id
    # SKIP LOCKED: rows another worker is claiming right now are simply not offered.
    candidates = (
        session.scalars(
            select(Generation)
            .where(Generation.status == str(GenerationStatus.QUEUED), Generation.model_id == model_id)
            .order_by(Generation.id)
            .limit(32)
            .with_for_update(of=Generation, skip_locked=True)
        )
        .unique()
        .all()
    )
    claimed: list[RenderJob] = []
    for row in candidates:
        if int((row.params or {}).get("n", 4)) > room:
            continue
        try:
            job = render_job_from_row(session, row, runtime.store)
        except JobFailed:
            continue  # its own task will fail it properly
        if batch_key(job) != key:
            continue
        started = _start(session, runtime, row, leader=leader_id)
        if started is not None:
            claimed.append(started)
            room -= started.n
        if room <= 0:
            break
    return claimed


class ProgressReporter:
    """Write progress to the row at most every PROGRESS_INTERVAL_S; stop the render when the job
    is no longer this render's (cancelled, or swept back to the queue after a lost lease)."""

    def __init__(self, runtime: WorkerRuntime, job: RenderJob) -> None:
        self.runtime = runtime
        self.job = job
        self._last = 0.0

    def __call__(self, fraction: float, stage: str) -> None:
        now = time.monotonic()
        # The end needs no write: marking the job done follows at once (and sets progress 1).
        if fraction >= 1.0 or now - self._last < PROGRESS_INTERVAL_S:
            return
        self._last = now
        try:
            with self.runtime.db.sync_session() as session:
                result = session.execute(
                    update(Generation)
                    .where(*_owned(self.runtime, self.job))
                    .values(
                        progress=min(1.0, max(0.0, fraction)), stage=stage, updated_at=utcnow(), heartbeat_at=utcnow()
                    )
                    .execution_options(synchronize_session=False)
                )
        except Exception as error:
            if not is_unavailable(error):
                raise
            # Progress is best effort: a database blip must not stop (or fail) the render.
            log.info("job %s: progress not written (%s)", self.job.generation_id, str(error).splitlines()[0][:200])
            return
        if rowcount(result) == 0:
            log.info("job %s: no longer this render's (cancelled, or taken over), stopping", self.job.generation_id)
            raise RenderAborted()
        self.runtime.publisher.publish(self.job.generation_id, "running", fraction)


def _owned(runtime: WorkerRuntime, job: RenderJob) -> tuple[ColumnElement[bool], ...]:
    """WHERE clauses: the job is running, and still under this render's claim."""
    return (
        Generation.id == job.generation_id,
        Generation.status == str(GenerationStatus.RUNNING),
        Generation.worker == runtime.name,
        Generation.attempts == job.attempt,
    )


def _fail(session: Session, generation: Generation, message: str) -> None:
    generation.status = str(GenerationStatus.FAILED)
    generation.error = message
    generation.finished_at = utcnow()
    generation.stage = None
    refunded = repo.refund(session, generation, f"render failed: {message}"[:200])
    log.warning("job %s failed (%s); refunded %d image(s)", generation.id, message, refunded)


def fail_job(runtime: WorkerRuntime, job: RenderJob, message: str) -> None:
    """Mark a job failed and refund it, if it is still this render's."""

    def fail(session: Session) -> bool:
        generation = (
            session.scalars(
                select(Generation)
                .where(*_owned(runtime, job))
                .with_for_update(of=Generation)
                .options(lazyload(Generation.images))
                .execution_options(populate_existing=True)
            )
            .unique()
            .one_or_none()
        )
        if generation is None:
            return False  # finished, cancelled, or taken over by another worker meanwhile
        _fail(session, generation, message)
        return True

    if runtime.db.retrying(fail):
        metrics.JOBS.labels(status="failed").inc()
        metrics.FAILURES.labels(reason=metrics.failure_reason(message)).inc()
        runtime.publisher.publish(job.generation_id, str(GenerationStatus.FAILED), 0.0)


def store_result(runtime: WorkerRuntime, job: RenderJob, result: RenderResult, render_ms: int) -> str:
    """Write the files, then the rows; returns the job's final status.

    The files are named after this claim (`a2-1.png`), so a render that lost its job (its lease
    ran out while the database was away, and another worker stored the job) never overwrites the
    files the stored rows point to. Any render of a job that is not final may store it — the
    first to finish wins, the others discard their files.
    """
    prefix = f"a{job.attempt}-"
    keys = [
        runtime.store.put(ImageStore.key_for(job.generation_id, f"{prefix}{image.index}.png"), image.png)
        for image in result.images
    ]
    grid_key = None
    if result.grid_png is not None:
        grid_key = runtime.store.put(ImageStore.key_for(job.generation_id, f"{prefix}grid.png"), result.grid_png)

    def commit(session: Session) -> tuple[str, bool]:
        """(the job's status, whether this render's files are the stored ones)."""
        generation = repo.get_generation(session, job.generation_id, lock=True, images=False)
        if generation is None:
            return "missing", False
        if generation.status == str(GenerationStatus.DONE):
            # Ours if this is a retry of a commit whose answer was lost.
            stored = set(session.scalars(select(Image.storage_key).where(Image.generation_id == generation.id)))
            return generation.status, bool(keys) and stored == set(keys)
        if GenerationStatus(generation.status).is_final:
            return generation.status, False
        for image, key in zip(result.images, keys, strict=True):
            session.add(
                Image(
                    generation_id=generation.id,
                    index=image.index,
                    storage_key=key,
                    width=image.width,
                    height=image.height,
                    seed=image.seed,
                    sha256=image.sha256,
                    embedding=image.embedding,
                    embedding_dim=image.embedding_dim,
                )
            )
        generation.status = str(GenerationStatus.DONE)
        generation.progress = 1.0
        generation.stage = None
        generation.finished_at = utcnow()
        generation.render_ms = render_ms
        generation.grid_key = grid_key
        generation.render_info = result.info
        return generation.status, True

    status, kept = runtime.db.retrying(commit)
    if not kept:
        log.info("job %s: %s while rendering, discarding this render's images", job.generation_id, status)
        for key in keys + ([grid_key] if grid_key else []):
            runtime.store.delete(key)
    return status


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
