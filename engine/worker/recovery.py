"""Jobs that lost their worker or their message go back on the queue by themselves.

A running job's worker renews its lease (`heartbeat_at`) every few seconds. Every worker process
runs a `Sweeper` thread that, every `sweep_interval_s`:

1. puts running jobs whose lease ran out (their worker was SIGKILLed, OOM-killed, lost with its
   machine, or cut off from the database for longer than the lease) back to `queued` and
   publishes each again — Redis would give a dead solo worker's message back only after its
   visibility timeout (23 minutes), RabbitMQ only when it notices the connection is gone;
2. when the render queue is empty, publishes again the queued jobs whose message was published
   more than `republish_after_s` ago: with nothing waiting in the broker, their message is gone
   (a worker killed between receiving it and claiming the row, a restarted Redis without
   persistence, a crash between writing the row and publishing).

Publishing a job twice is always safe: a task locks the row first and does nothing for a job
that is finished or whose lease is live, so the rows stay the truth. The publish happens inside
the transaction that marks the rows, so a broker that cannot be reached leaves them as they were
for the next sweep. `imagine-bot requeue` does the same by hand, with thresholds you choose.
"""

from __future__ import annotations

import logging
import random
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine import forksafe
from engine.domain.types import GenerationStatus
from engine.store.db import Database
from engine.store.models import Generation, utcnow

if TYPE_CHECKING:
    from celery import Celery

    from engine.config import Settings
    from engine.service import JobQueue

log = logging.getLogger(__name__)

SWEEP_LIMIT = 100


def requeue_expired(session: Session, queue: JobQueue, *, lease_s: float, now: datetime | None = None) -> list[int]:
    """Running jobs whose lease ran out: published again, back to queued. Returns their ids."""
    now = now or utcnow()
    beat = func.coalesce(Generation.heartbeat_at, Generation.started_at, Generation.created_at)
    rows = (
        session.scalars(
            select(Generation)
            .where(Generation.status == str(GenerationStatus.RUNNING), beat < now - timedelta(seconds=lease_s))
            .order_by(Generation.id)
            .limit(SWEEP_LIMIT)
            .with_for_update(of=Generation, skip_locked=True)
        )
        .unique()
        .all()
    )
    for row in rows:
        log.warning(
            "job %s: %s stopped renewing its lease (attempt %d); back on the queue", row.id, row.worker, row.attempts
        )
        _publish(queue, row, now)
        # Out of any batch: the next worker claims it afresh (attempts are kept: a job that
        # kills its worker again and again is failed at the limit instead of looping).
        row.status = str(GenerationStatus.QUEUED)
        row.batch_leader_id = None
        row.progress = 0.0
        row.stage = None
        row.heartbeat_at = None
    return [row.id for row in rows]


def republish_unqueued(
    session: Session, queue: JobQueue, *, older_than_s: float, now: datetime | None = None
) -> list[int]:
    """Queued jobs last published more than `older_than_s` ago: published again. Only call it when
    the render queue is empty (then their message is certainly not waiting in it)."""
    now = now or utcnow()
    published = func.coalesce(Generation.enqueued_at, Generation.created_at)
    rows = (
        session.scalars(
            select(Generation)
            .where(Generation.status == str(GenerationStatus.QUEUED), published < now - timedelta(seconds=older_than_s))
            .order_by(Generation.id)
            .limit(SWEEP_LIMIT)
            .with_for_update(of=Generation, skip_locked=True)
        )
        .unique()
        .all()
    )
    for row in rows:
        log.warning(
            "job %s: queued since %s but not in the broker; publishing it again",
            row.id,
            row.enqueued_at or row.created_at,
        )
        _publish(queue, row, now)
    return [row.id for row in rows]


def _publish(queue: JobQueue, row: Generation, now: datetime) -> None:
    row.task_id = uuid.uuid4().hex
    queue.enqueue(row.id, row.task_id)
    row.enqueued_at = now


class Sweeper:
    """The recovery loop of one worker process (a daemon thread; every worker runs one, and
    SKIP LOCKED keeps two sweepers from handling the same job)."""

    def __init__(
        self,
        db: Database,
        queue: JobQueue,
        queue_size: Callable[[], int | None],
        *,
        lease_s: float,
        interval_s: float,
        republish_after_s: float,
    ) -> None:
        self.db = db
        self.queue = queue
        self.queue_size = queue_size  # messages waiting in the render queue (None: unknown)
        self.lease_s = lease_s
        self.interval_s = interval_s
        self.republish_after_s = republish_after_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self) -> dict[str, list[int]]:
        """One pass; returns the ids it requeued and republished."""
        requeued = self.db.retrying(requeue_expired, self.queue, lease_s=self.lease_s, deadline_s=self.interval_s)
        republished: list[int] = []
        if self.queue_size() == 0:
            republished = self.db.retrying(
                republish_unqueued, self.queue, older_than_s=self.republish_after_s, deadline_s=self.interval_s
            )
        return {"requeued": requeued, "republished": republished}

    def start(self) -> Sweeper:
        self._thread = threading.Thread(target=self._run, name="imagine-sweeper", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.db.close_sync()

    def _run(self) -> None:
        # Jittered, so the sweepers of workers started together do not all run at once.
        while not self._stop.wait(self.interval_s * random.uniform(0.8, 1.2)):
            try:
                # In a prefork worker this thread lives in the parent, which forks children.
                with forksafe.busy():
                    self.sweep()
            except Exception as error:  # noqa: BLE001 - the next sweep tries again
                log.warning("recovery sweep failed: %s", str(error).splitlines()[0][:300])


def start_sweeper(app: Celery, settings: Settings) -> Sweeper:
    """The sweeper of a worker process (`imagine-bot worker`, the embedded worker), started."""
    from engine.worker.queue import CeleryJobQueue

    queue = CeleryJobQueue(app)
    worker = settings.worker
    # A database of its own (one connection): in a prefork worker the sweeper lives in the
    # parent, whose connections the forked children must not share.
    return Sweeper(
        Database(settings.database_url, pool_size=1, max_overflow=1),
        queue,
        queue.waiting,
        lease_s=worker.lease_s,
        interval_s=worker.sweep_interval_s,
        republish_after_s=worker.republish_after_s,
    ).start()


def requeue_stuck(
    db: Database,
    queue: JobQueue,
    *,
    queued_for: timedelta,
    running_for: timedelta,
    apply: bool = False,
    now: datetime | None = None,
) -> dict[str, list[int]]:
    """By hand (`imagine-bot requeue`): jobs queued longer than `queued_for`, or running with no
    heartbeat for longer than `running_for`, published again when `apply` is set."""
    now = now or utcnow()
    if apply:
        with db.sync_session() as session:
            running = requeue_expired(session, queue, lease_s=running_for.total_seconds(), now=now)
        with db.sync_session() as session:
            queued = republish_unqueued(session, queue, older_than_s=queued_for.total_seconds(), now=now)
        queued = [job_id for job_id in queued if job_id not in running]
        log.info("requeued %d queued and %d stalled running job(s)", len(queued), len(running))
        return {"queued": queued, "running": running}
    with db.sync_session() as session:
        beat = func.coalesce(Generation.heartbeat_at, Generation.started_at, Generation.created_at)
        published = func.coalesce(Generation.enqueued_at, Generation.created_at)
        stale_queued = session.scalars(
            select(Generation.id)
            .where(Generation.status == str(GenerationStatus.QUEUED), published < now - queued_for)
            .order_by(Generation.id)
        ).all()
        stale_running = session.scalars(
            select(Generation.id)
            .where(Generation.status == str(GenerationStatus.RUNNING), beat < now - running_for)
            .order_by(Generation.id)
        ).all()
    return {"queued": list(stale_queued), "running": list(stale_running)}
