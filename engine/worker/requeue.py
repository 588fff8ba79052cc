"""Put stuck jobs back on the queue: the recovery for a lost broker (a Redis without
persistence restarted, a restore from backup) where the job rows survived but their messages
did not. The rows are the truth, and a job rendered twice is stored once, so re-publishing is
always safe."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select

from engine.domain.types import GenerationStatus
from engine.store.db import Database
from engine.store.models import Generation, utcnow

log = logging.getLogger(__name__)


def requeue_stuck(db: Database, queue, *, queued_for: timedelta, running_for: timedelta,
                  apply: bool = False, now: datetime | None = None) -> dict[str, list[int]]:
    """Jobs queued longer than `queued_for`, or running longer than `running_for` (longer than
    any render may take: its worker is gone), published again when `apply` is set."""
    now = now or utcnow()
    with db.sync_session() as session:
        queued = session.scalars(
            select(Generation.id).where(Generation.status == str(GenerationStatus.QUEUED),
                                        Generation.created_at < now - queued_for).order_by(Generation.id)
        ).all()
        running = session.scalars(
            select(Generation).where(Generation.status == str(GenerationStatus.RUNNING),
                                     Generation.started_at < now - running_for)
            .order_by(Generation.id).with_for_update(of=Generation)
        ).unique().all()
        running_ids = [row.id for row in running]
        if apply:
            for row in running:
                # Back to queued, out of any batch: the next worker claims it afresh.
                row.status = str(GenerationStatus.QUEUED)
                row.batch_leader_id = None
                row.progress = 0.0
                row.stage = None
    if apply:
        for job_id in [*queued, *running_ids]:
            queue.enqueue(job_id, uuid.uuid4().hex)
        log.info("requeued %d queued and %d stalled running job(s)", len(queued), len(running_ids))
    return {"queued": list(queued), "running": running_ids}
