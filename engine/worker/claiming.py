"""Claiming jobs: the first step of every render, and where batches are formed.

`claim` marks the job running on this worker — a queued job in one autocommit `UPDATE …
RETURNING`. Any other row is read once, unlocked: a job that is gone, finished, or held under a
live lease by another worker (a duplicate or redelivered message; under load, the own message of
every job claimed into a batch) needs nothing more. Only the rest is locked and looked at: a job
whose previous worker stopped renewing its lease is adopted, and this worker's own claim whose
answer was lost is gone on with. It then claims compatible queued
jobs into the same batch (same model, operation, size and steps), waiting up to the batch window
for more; they render in one pipeline call, each image with its own seed.

Everything the renderer needs is read from the rows here (`render_job_from_row`), so the render
runs outside any transaction. A row that cannot be rendered (its source image is gone, its worker
died too often) is failed and refunded on the spot.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session, aliased, lazyload

from engine import metrics
from engine.domain.types import GenerationKind, GenerationStatus
from engine.image_files import ImageStore
from engine.render.types import RenderJob, batch_key
from engine.store import repo
from engine.store.db import is_unavailable
from engine.store.models import Generation, Image, UTCDateTime, utcnow
from engine.worker.lease import beat_live, lease_live
from engine.worker.results import fail_row
from engine.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


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
    source_weights: str | None = None
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
            source_weights = (parent.generation.render_info or {}).get("weights_sha256")
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
        source_weights=source_weights,
        weights=weights,
        attempt=generation.attempts,
    )


@dataclass(frozen=True)
class _FastClaim:
    """What `_claim_fast` found in autocommit, without locking the row."""

    job: RenderJob | None = None  # claimed, to render
    failure: str | None = None  # claimed, but it cannot be rendered: why
    more_queued: bool = False  # other jobs are queued: look for a batch
    needs_lock: bool = False  # neither queued nor plainly nothing to do: lock the row and look


def claim(runtime: WorkerRuntime, generation_id: int) -> list[RenderJob]:
    """Mark the job running on this worker, plus a batch; [] if nothing to do."""
    fast = runtime.db.retrying(_claim_fast, runtime, generation_id, autocommit=True)
    job, failed = fast.job, False
    gathered: list[RenderJob] = []
    if fast.failure is not None:
        # Failing and refunding are two writes that belong together: a transaction of their own.
        failed = runtime.db.retrying(_fail_own_claim, runtime, generation_id, fast.failure)
    elif fast.needs_lock:
        job, failed, gathered = runtime.db.retrying(_claim_row, runtime, generation_id)
    elif job is not None and fast.more_queued:
        gathered = _gather_into(runtime, generation_id, job)
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


def _claim_fast(session: Session, runtime: WorkerRuntime, generation_id: int) -> _FastClaim:
    """The common cases, in autocommit without a lock: a queued job claimed by one `UPDATE …
    RETURNING` and read for the render (one round trip on PostgreSQL for a text prompt); or, when
    the row is not queued, one plain read that settles the messages with nothing to do — a job
    gone or finished, or a duplicate message for a job under another's live lease (each job
    claimed into a batch still gets its own message, so under load this is every other message).
    Anything else (a lease run out, this worker's own claim whose answer was lost, a job out of
    attempts) needs the row locked: `_claim_row`. Every answer here is safe to act on unlocked:
    none writes, and a row can only leave these states by a claim that locks or updates it."""
    claimed = _claim_queued(session, runtime, generation_id)
    if claimed is None:
        found = session.execute(_CLAIM_LOOK, {"generation_id": generation_id}).one_or_none()
        if found is None:
            log.warning("job %s: no such row, dropping the task", generation_id)
            return _FastClaim()
        if _nothing_to_do(runtime, generation_id, *found):
            return _FastClaim()
        return _FastClaim(needs_lock=True)
    generation, more_queued = claimed
    try:
        return _FastClaim(job=render_job_from_row(session, generation, runtime.store), more_queued=more_queued)
    except JobFailed as error:
        return _FastClaim(failure=str(error))


#: What `_nothing_to_do` reads of a row that is not queued.
_CLAIM_LOOK = select(
    Generation.status, Generation.worker, Generation.batch_leader_id, Generation.heartbeat_at, Generation.started_at
).where(Generation.id == bindparam("generation_id"))


def _nothing_to_do(
    runtime: WorkerRuntime,
    generation_id: int,
    status: str,
    worker: str | None,
    batch_leader_id: int | None,
    heartbeat_at: datetime | None,
    started_at: datetime | None,
) -> bool:
    """Whether a message for this row has nothing to do: the job is finished, or it renders under
    another live lease (a duplicate message). Not so for this worker's own solo claim under a
    live lease: that is a claim whose answer was lost, to go on with."""
    state = GenerationStatus(status)
    if state.is_final:
        log.info("job %s: already %s, nothing to do", generation_id, state)
        return True
    if state != GenerationStatus.RUNNING or not beat_live(heartbeat_at or started_at, runtime.lease_s):
        return False
    if worker == runtime.name and batch_leader_id is None:
        return False
    log.info(
        "job %s: rendering on %s%s (lease live); this message is a duplicate",
        generation_id,
        worker,
        f" in job {batch_leader_id}'s batch" if batch_leader_id else "",
    )
    return True


def _fail_own_claim(session: Session, runtime: WorkerRuntime, generation_id: int, message: str) -> bool:
    """Fail and refund a job this worker claimed moments ago (False if it is not ours any more)."""
    row = repo.get_generation(session, generation_id, lock=True, images=False)
    if row is None or row.status != str(GenerationStatus.RUNNING) or row.worker != runtime.name:
        return False
    fail_row(session, row, message)
    return True


def _gather_into(runtime: WorkerRuntime, generation_id: int, job: RenderJob) -> list[RenderJob]:
    """The first look for a batch, in its own transaction (its rows are locked, SKIP LOCKED)."""
    try:
        with runtime.db.sync_session() as session:
            return _gather_first(session, runtime, generation_id, job)
    except Exception as error:
        if not is_unavailable(error):
            raise
        # Render the leader alone; rows of a commit whose answer was lost are swept back to the
        # queue when their lease runs out.
        log.warning("job %s: no batch this time (%s)", generation_id, str(error).splitlines()[0][:200])
        return []


def _claim_row(
    session: Session, runtime: WorkerRuntime, generation_id: int
) -> tuple[RenderJob | None, bool, list[RenderJob]]:
    """The row locked and looked at: (the job to render or None, whether it was failed instead,
    the jobs batched with it) — safe to run twice. A job swept back by recovery (running, its
    lease run out), a duplicate message, a job gone or finished, or this worker's own claim whose
    answer was lost; the first look for a batch is in the same transaction."""
    locked = repo.get_generation(session, generation_id, lock=True, images=False)
    if locked is None:
        log.warning("job %s: no such row, dropping the task", generation_id)
        return None, False, []
    generation = locked
    if _nothing_to_do(
        runtime,
        generation_id,
        generation.status,
        generation.worker,
        generation.batch_leader_id,
        generation.heartbeat_at,
        generation.started_at,
    ):
        return None, False, []
    if generation.status == str(GenerationStatus.RUNNING):
        if lease_live(generation, runtime.lease_s):
            # Our own claim, committed although its answer was lost: go on with it.
            return render_job_from_row(session, generation, runtime.store), False, []
        log.warning(
            "job %s: %s stopped renewing its lease (attempt %d): rendering it here",
            generation_id,
            generation.worker,
            generation.attempts,
        )
    started = _start(session, runtime, generation, leader=None)
    if started is None:
        return None, True, []
    return started, False, _gather_first(session, runtime, generation_id, started)


def _gather_first(session: Session, runtime: WorkerRuntime, generation_id: int, job: RenderJob) -> list[RenderJob]:
    key = batch_key(job)
    room = runtime.max_batch_images - job.n
    return _gather_once(session, runtime, generation_id, key, room) if room > 0 and key[-1] is None else []


def _claim_queued_statement() -> Any:
    """`_claim_queued`'s UPDATE, built once (an aliased entity alone costs milliseconds to
    build): every value is a parameter."""
    now = bindparam("now", type_=UTCDateTime())
    # Any other job queued (of any model: the batch's own look picks those of this one). Not
    # correlated with the updated row: SQLite's RETURNING cannot name it in a subquery.
    other = aliased(Generation)
    more_queued = (
        select(other.id)
        .where(other.status == str(GenerationStatus.QUEUED), other.id != bindparam("generation_id"))
        .exists()
    )
    return (
        update(Generation)
        .where(
            Generation.id == bindparam("generation_id"),
            Generation.status == str(GenerationStatus.QUEUED),
            Generation.attempts < bindparam("max_attempts"),
        )
        .values(
            status=str(GenerationStatus.RUNNING),
            heartbeat_at=now,
            started_at=func.coalesce(Generation.started_at, now),
            attempts=Generation.attempts + 1,
            worker=bindparam("worker"),
            batch_leader_id=None,
            stage="starting",
            progress=0.0,
        )
        .returning(Generation, more_queued)
        .options(lazyload(Generation.images))  # not read here: no second SELECT for them
        .execution_options(populate_existing=True, synchronize_session=False)
    )


_CLAIM_QUEUED = _claim_queued_statement()


def _claim_queued(session: Session, runtime: WorkerRuntime, generation_id: int) -> tuple[Generation, bool] | None:
    """The common case in one statement: a queued job, under its attempt limit, marked running on
    this worker (what `_start` does to a locked row) — with whether any other job is queued, so
    an empty queue costs no look for a batch. None when the row is anything else (gone,
    running, finished, out of attempts): the caller locks it and looks."""
    now = utcnow()
    parameters = {
        "generation_id": generation_id,
        "max_attempts": runtime.max_attempts,
        "now": now,
        "worker": runtime.name,
    }
    row: Any = session.execute(_CLAIM_QUEUED, parameters).one_or_none()
    if row is None:
        return None
    generation, more = row
    if generation.started_at == now:  # its first start (a job swept back keeps its first one)
        metrics.JOB_SECONDS.labels(phase="queue_wait").observe(max(0.0, (now - generation.created_at).total_seconds()))
    return generation, bool(more)


def _start(session: Session, runtime: WorkerRuntime, row: Generation, *, leader: int | None) -> RenderJob | None:
    """Mark one row running on this worker; None (and the row failed) if it cannot render."""
    if row.attempts >= runtime.max_attempts:
        fail_row(session, row, f"the worker stopped {row.attempts} times while rendering it")
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
        fail_row(session, row, str(error))
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
