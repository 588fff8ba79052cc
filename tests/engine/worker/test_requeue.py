"""Recovering from a lost broker: stuck jobs are published again, and render once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import update

from engine.domain.types import Actor, GenerationStatus, ImagineRequest, Platform, RenderParams
from engine.render.noop import NoopRenderer
from engine.storage import ImageStore
from engine.store.db import Database
from engine.store.models import Generation, utcnow
from engine.worker.jobs import WorkerRuntime, run_generation
from engine.worker.requeue import requeue_stuck
from tests.engine.worker.test_jobs import RecordingPublisher

ALICE = Actor(Platform.CONSOLE, "team-1", "alice", "Alice")


async def test_stuck_jobs_are_requeued_and_finish_once(service, database, database_url, queue, tmp_path):
    """Old queued jobs and long-stalled running ones are published again (only with --apply);
    fresh ones are left alone; a requeued job renders once."""
    ids = [(await service.submit_imagine(ALICE, ImagineRequest("x", params=RenderParams(n=1)))).generation.id
           for _ in range(4)]
    old, stalled, fresh_queued, fresh_running = ids
    now = utcnow()

    def age(session):
        session.execute(update(Generation).where(Generation.id == old).values(created_at=now - timedelta(hours=2)))
        session.execute(update(Generation).where(Generation.id == stalled).values(
            status="running", started_at=now - timedelta(hours=1), batch_leader_id=fresh_queued, attempts=1))
        session.execute(update(Generation).where(Generation.id == fresh_running).values(
            status="running", started_at=now))

    await database.run(age)
    db = Database(database_url)
    queue.enqueued.clear()
    found = requeue_stuck(db, queue, queued_for=timedelta(minutes=30), running_for=timedelta(minutes=22))
    assert found == {"queued": [old], "running": [stalled]} and queue.enqueued == []
    requeue_stuck(db, queue, queued_for=timedelta(minutes=30), running_for=timedelta(minutes=22), apply=True)
    assert sorted(queue.enqueued) == [old, stalled]
    assert (await service.generation(stalled)).status == GenerationStatus.QUEUED

    runtime = WorkerRuntime(db=db, store=ImageStore(tmp_path / "images"), publisher=RecordingPublisher(),
                            renderer_factory=NoopRenderer, max_batch_images=1)
    for job_id in (stalled, stalled):  # the old message may still turn up: it finds the job done
        await asyncio.to_thread(run_generation, runtime, job_id)
    done = await service.generation(stalled)
    assert done.status == GenerationStatus.DONE and len(done.images) == 1
    db.sync_engine.dispose()
