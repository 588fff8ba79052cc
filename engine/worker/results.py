"""What a render writes back to its jobs' rows: progress while it runs, then the images or the
failure.

Every write here is guarded by the claim the render holds (`owned`: the row is running, on this
worker, at this attempt), so a render that lost its job — cancelled, or swept back to the queue
after its lease ran out and taken by another worker — changes nothing that is no longer its own.
The claim itself is taken in engine/worker/claiming.py; engine/worker/jobs.py calls these.
"""

from __future__ import annotations

import logging
import time
from typing import cast

from sqlalchemy import ColumnElement, Table, bindparam, insert, select, update
from sqlalchemy.orm import Session, lazyload

from engine import metrics
from engine.domain.types import FINAL_STATUSES, GenerationStatus
from engine.image_files import ImageStore
from engine.render.types import RenderAborted, RenderJob, RenderResult
from engine.store import repo
from engine.store.db import is_unavailable, rowcount
from engine.store.models import Generation, Image, utcnow
from engine.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5


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
                    .where(*owned(self.runtime, self.job))
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


def owned(runtime: WorkerRuntime, job: RenderJob) -> tuple[ColumnElement[bool], ...]:
    """WHERE clauses: the job is running, and still under this render's claim."""
    return (
        Generation.id == job.generation_id,
        Generation.status == str(GenerationStatus.RUNNING),
        Generation.worker == runtime.name,
        Generation.attempts == job.attempt,
    )


def fail_row(session: Session, generation: Generation, message: str) -> None:
    """Mark a locked row failed and refund its images (the caller checked it may)."""
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
                .where(*owned(runtime, job))
                .with_for_update(of=Generation)
                .options(lazyload(Generation.images))
                .execution_options(populate_existing=True)
            )
            .unique()
            .one_or_none()
        )
        if generation is None:
            return False  # finished, cancelled, or taken over by another worker meanwhile
        fail_row(session, generation, message)
        return True

    if runtime.db.retrying(fail):
        metrics.JOBS.labels(status="failed").inc()
        metrics.FAILURES.labels(reason=metrics.failure_reason(message)).inc()
        runtime.publisher.publish(job.generation_id, str(GenerationStatus.FAILED), 0.0)


#: store_result's statements, built once (every value is a parameter): the job marked done
#: unless it is final already, and its image rows.
_STORE_DONE = (
    update(cast(Table, Generation.__table__))
    .where(
        Generation.__table__.c.id == bindparam("generation_id"),
        Generation.__table__.c.status.not_in([str(s) for s in FINAL_STATUSES]),
    )
    .values(
        status=str(GenerationStatus.DONE),
        progress=1.0,
        stage=None,
        finished_at=bindparam("finished_at", type_=Generation.__table__.c.finished_at.type),
        render_ms=bindparam("render_ms", type_=Generation.__table__.c.render_ms.type),
        grid_key=bindparam("grid_key", type_=Generation.__table__.c.grid_key.type),
        render_info=bindparam("render_info", type_=Generation.__table__.c.render_info.type),
    )
    .returning(Generation.__table__.c.id)
)
_INSERT_IMAGE = insert(cast(Table, Image.__table__))


def store_result(runtime: WorkerRuntime, job: RenderJob, result: RenderResult, render_ms: int) -> str:
    """Write the files, then the rows; returns the job's final status.

    The files are named after this claim (`a2-1.png`), so a render that lost its job (its lease
    ran out while the database was away, and another worker stored the job) never overwrites the
    files the stored rows point to. Any render of a job that is not final may store it — the
    first to finish wins, the others discard their files.
    """
    prefix = f"a{job.attempt}-"
    name_for = ImageStore.key_for
    files = [(name_for(job.generation_id, f"{prefix}{image.index}.png"), image.png) for image in result.images]
    if result.grid_png is not None:
        files.append((name_for(job.generation_id, f"{prefix}grid.png"), result.grid_png))
    written = runtime.store.put_all(files)  # durable before the rows that point at them commit
    keys = written[: len(result.images)]
    grid_key = written[-1] if result.grid_png is not None else None

    def commit(session: Session) -> tuple[str, bool]:
        """(the job's status, whether this render's files are the stored ones)."""
        # The common case in one UPDATE: the job is not final, so it is done now, with these
        # files (whoever's claim it is under: the first render to finish wins).
        done = session.execute(
            _STORE_DONE,
            {
                "generation_id": job.generation_id,
                "finished_at": utcnow(),
                "render_ms": render_ms,
                "grid_key": grid_key,
                "render_info": result.info,
            },
        ).first()
        if done is not None:
            if keys:
                session.execute(
                    _INSERT_IMAGE,
                    [
                        {
                            "generation_id": job.generation_id,
                            "index": image.index,
                            "storage_key": key,
                            "width": image.width,
                            "height": image.height,
                            "seed": image.seed,
                            "sha256": image.sha256,
                            "embedding": image.embedding,
                            "embedding_dim": image.embedding_dim,
                        }
                        for image, key in zip(result.images, keys, strict=True)
                    ],
                )
            return str(GenerationStatus.DONE), True
        status = session.scalar(select(Generation.status).where(Generation.id == job.generation_id))
        if status is None:
            return "missing", False
        if status == str(GenerationStatus.DONE):
            # Ours if this is a retry of a commit whose answer was lost.
            stored = set(session.scalars(select(Image.storage_key).where(Image.generation_id == job.generation_id)))
            return status, bool(keys) and stored == set(keys)
        return status, False  # finished otherwise (failed, cancelled) meanwhile

    status, kept = runtime.db.retrying(commit)
    if not kept:
        log.info("job %s: %s while rendering, discarding this render's images", job.generation_id, status)
        for key in keys + ([grid_key] if grid_key else []):
            runtime.store.delete(key)
    return status
