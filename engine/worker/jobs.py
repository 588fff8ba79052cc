"""Run one job by id: the body of the Celery task, kept free of Celery so it reads top to bottom.

1. lock the row; return if it is gone, finished or cancelled (a redelivered task does nothing
   twice); mark it running;
2. render outside any transaction, reporting progress (throttled) and stopping if the job is
   cancelled meanwhile;
3. write the PNGs (atomic renames, idempotent keys), then in one transaction insert the image
   rows and mark the job done — or, on failure, mark it failed and refund;
4. publish a wake-up so the bot delivers.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select, update

from engine.domain.types import GenerationKind, GenerationStatus
from engine.notify import Publisher
from engine.render.jobs import RenderAborted, RenderError, RenderJob, RenderResult
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

    def render(self, job: RenderJob, progress) -> RenderResult: ...


@dataclass
class WorkerRuntime:
    """What a worker process holds for its lifetime (the renderer is loaded once, lazily)."""

    db: Database
    store: ImageStore
    publisher: Publisher
    renderer_factory: Any  # () -> Renderer
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
    if kind == GenerationKind.UPSCALE:
        return "upscale"
    if kind == GenerationKind.BLEND:
        return "blend"
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
    elif operation == "blend":
        rows = {i.id: i for i in session.scalars(
            select(Image).where(Image.id.in_([s["image_id"] for s in params.get("sources", [])]))
        )}
        sources = [rows.get(s["image_id"]) for s in params.get("sources", [])]
        if len(sources) < 2 or any(i is None or i.embedding is None for i in sources):
            raise JobFailed("a source image of the blend no longer exists")
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


def claim(runtime: WorkerRuntime, generation_id: int) -> RenderJob | None:
    """Lock the row and mark it running; None when there is nothing (left) to do."""
    failure: str | None = None
    with runtime.db.sync_session() as session:
        generation = repo.get_generation(session, generation_id, lock=True, images=False)
        if generation is None:
            log.warning("job %s: no such row, dropping the task", generation_id)
            return None
        status = GenerationStatus(generation.status)
        if status.is_final:
            log.info("job %s: already %s, nothing to do", generation_id, status)
            return None
        if status == GenerationStatus.RUNNING:
            # A redelivery after the worker died mid-render (late ack + reject on worker lost).
            log.warning("job %s: was running on %s (attempt %d): rendering again",
                        generation_id, generation.worker, generation.attempts)
        if generation.attempts >= MAX_ATTEMPTS:
            failure = f"the worker stopped {generation.attempts} times while rendering it"
        else:
            generation.status = str(GenerationStatus.RUNNING)
            generation.started_at = generation.started_at or utcnow()
            generation.attempts += 1
            generation.worker = runtime.name
            generation.stage = "starting"
            generation.progress = 0.0
            try:
                return render_job_from_row(session, generation, runtime.store)
            except JobFailed as error:
                failure = str(error)
        _fail(session, generation, failure)
    runtime.publisher.publish(generation_id, str(GenerationStatus.FAILED), 0.0)
    return None


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
    """Render one job end to end; returns what happened (for logs and tests)."""
    job = claim(runtime, generation_id)
    if job is None:
        return "skipped"
    runtime.publisher.publish(generation_id, str(GenerationStatus.RUNNING), 0.0)
    started = time.perf_counter()
    try:
        result = runtime.renderer.render(job, ProgressReporter(runtime, generation_id))
    except RenderAborted:
        return "aborted"
    except (JobFailed, RenderError) as error:  # the model cannot do this: say why
        fail_job(runtime, generation_id, str(error))
        return "failed"
    except Exception as error:
        log.exception("job %s: render crashed", generation_id)
        fail_job(runtime, generation_id, _describe(error))
        return "failed"
    render_ms = round((time.perf_counter() - started) * 1000)
    status = store_result(runtime, job, result, render_ms)
    runtime.publisher.publish(generation_id, status, 1.0)
    log.info("job %s %s: %d image(s) in %d ms", generation_id, status, len(result.images), render_ms)
    return status


def _describe(error: Exception) -> str:
    """A short, user-safe reason (details stay in the worker log)."""
    name = type(error).__name__
    if name == "SoftTimeLimitExceeded":
        return "the render took longer than the time limit"
    if "out of memory" in str(error).lower():
        return "the GPU ran out of memory"
    return f"the renderer failed ({name})"
