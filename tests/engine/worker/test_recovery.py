"""Recovery: jobs that lost their worker, their message or their database connection finish
once, charged once — by the lease, the sweeper and retried transactions."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from engine.domain.types import Actor, GenerationStatus, ImagineRequest, Platform, RenderParams
from engine.image_files import ImageStore
from engine.render.noop import NoopRenderer
from engine.store.db import Database
from engine.store.models import Generation, QuotaLedgerEntry, utcnow
from engine.worker import jobs, results
from engine.worker.claiming import claim
from engine.worker.jobs import run_generation
from engine.worker.recovery import Sweeper, requeue_stuck
from engine.worker.runtime import WorkerRuntime
from tests.engine.worker.test_jobs import RecordingPublisher

ALICE = Actor(Platform.CONSOLE, "team-1", "alice", "Alice")


async def test_stuck_jobs_are_requeued_and_finish_once(service, deliveries, database, database_url, queue, tmp_path):
    """Old queued jobs and long-stalled running ones are published again (only with --apply);
    fresh ones are left alone; a requeued job renders once."""
    ids = [
        (await service.submit_imagine(ALICE, ImagineRequest("x", params=RenderParams(n=1)))).generation.id
        for _ in range(4)
    ]
    old, stalled, fresh_queued, fresh_running = ids
    now = utcnow()

    def age(session):
        session.execute(
            update(Generation)
            .where(Generation.id == old)
            .values(created_at=now - timedelta(hours=2), enqueued_at=now - timedelta(hours=2))
        )
        session.execute(
            update(Generation)
            .where(Generation.id == stalled)
            .values(status="running", started_at=now - timedelta(hours=1), batch_leader_id=fresh_queued, attempts=1)
        )
        session.execute(
            update(Generation).where(Generation.id == fresh_running).values(status="running", started_at=now)
        )

    await database.run(age)
    db = Database(database_url)
    queue.enqueued.clear()
    found = requeue_stuck(db, queue, queued_for=timedelta(minutes=30), running_for=timedelta(minutes=22))
    assert found == {"queued": [old], "running": [stalled]} and queue.enqueued == []
    requeue_stuck(db, queue, queued_for=timedelta(minutes=30), running_for=timedelta(minutes=22), apply=True)
    assert sorted(queue.enqueued) == [old, stalled]
    assert (await deliveries.generation(stalled)).status == GenerationStatus.QUEUED

    runtime = WorkerRuntime(
        db=db,
        store=ImageStore(tmp_path / "images"),
        publisher=RecordingPublisher(),
        renderer_factory=NoopRenderer,
        max_batch_images=1,
    )
    for job_id in (stalled, stalled):  # the old message may still turn up: it finds the job done
        await asyncio.to_thread(run_generation, runtime, job_id)
    done = await deliveries.generation(stalled)
    assert done.status == GenerationStatus.DONE and len(done.images) == 1
    db.sync_engine.dispose()


class WorkerKilled(BaseException):
    """Stands in for SIGKILL inside a test: nothing after it runs, no handler catches it."""


def make_runtime(database_url, tmp_path, **options) -> WorkerRuntime:
    return WorkerRuntime(
        db=Database(database_url),
        store=ImageStore(tmp_path / "images"),
        publisher=RecordingPublisher(),
        renderer_factory=NoopRenderer,
        **options,
    )


async def expire_leases(database, *ids, by_s: float = 60.0) -> None:
    """Make the jobs' last heartbeat `by_s` old: their worker has been gone that long."""

    def age(session):
        session.execute(
            update(Generation).where(Generation.id.in_(ids)).values(heartbeat_at=utcnow() - timedelta(seconds=by_s))
        )

    await database.run(age)


async def ledger(database, job_id) -> list[str]:
    def read(session):
        return sorted(
            session.scalars(select(QuotaLedgerEntry.kind).where(QuotaLedgerEntry.generation_id == job_id)).all()
        )

    return await database.run(read)


async def test_batch_followers_stranded_by_a_kill_after_the_leaders_store_finish(
    service, deliveries, database, database_url, queue, tmp_path, monkeypatch
):
    """The worker dies after storing the batch leader but before its followers: the messages that
    arrive then do nothing (the leader is done, the followers' lease is live), and once the lease
    runs out the sweeper puts the followers back on the queue; each finishes once, charged once."""
    ids = [
        (await service.submit_imagine(ALICE, ImagineRequest("x", seed=i, params=RenderParams(n=1)))).generation.id
        for i in range(3)
    ]
    leader, *followers = ids
    runtime = make_runtime(database_url, tmp_path, max_batch_images=8)
    stores = []
    real_store = results.store_result

    def store_then_die(*args, **kwargs):
        if stores:
            raise WorkerKilled()
        stores.append(real_store(*args, **kwargs))
        return stores[-1]

    monkeypatch.setattr(jobs, "store_result", store_then_die)
    with pytest.raises(WorkerKilled):
        await asyncio.to_thread(run_generation, runtime, leader)
    monkeypatch.setattr(jobs, "store_result", real_store)
    assert (await deliveries.generation(leader)).status == GenerationStatus.DONE
    assert {(await deliveries.generation(f)).status for f in followers} == {GenerationStatus.RUNNING}

    # Redeliveries of every message (RabbitMQ gives them back as soon as the connection drops).
    other = make_runtime(database_url, tmp_path, max_batch_images=8)
    for job_id in ids:
        assert await asyncio.to_thread(run_generation, other, job_id) == "skipped"

    await expire_leases(database, *followers)
    queue.enqueued.clear()
    sweeper = Sweeper(other.db, queue, lambda: 1, lease_s=other.lease_s, interval_s=1, republish_after_s=30)
    assert sweeper.sweep() == {"requeued": followers, "republished": []}
    assert sorted(queue.enqueued) == followers
    for job_id in queue.enqueued:
        await asyncio.to_thread(run_generation, other, job_id)
    for job_id in ids:
        job = await deliveries.generation(job_id)
        assert job.status == GenerationStatus.DONE and len(job.images) == 1
        assert await ledger(database, job_id) == ["debit"]
    assert (await service.quota(ALICE)).used == 3
    for runtime_ in (runtime, other):
        runtime_.db.close_sync()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_database_blip_while_storing_is_retried(service, deliveries, database, database_url, tmp_path):
    """PostgreSQL terminates the worker's connection in the middle of storing the result: the
    store is retried on a new connection and the job ends done, not stuck in `running`."""
    import psycopg
    from sqlalchemy import event

    job = (await service.submit_imagine(ALICE, ImagineRequest("x", params=RenderParams(n=2)))).generation
    postgres_url = database_url
    runtime = make_runtime(postgres_url, tmp_path)
    terminated = []

    def terminate_own_backend(connection):
        # Once, at the store's transaction: from outside, like an operator or a failover would.
        if terminated or not getattr(runtime, "rendered", False):
            return
        pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        terminated.append(pid)

    event.listen(runtime.db.sync_engine, "begin", terminate_own_backend)
    real_render = NoopRenderer.render_batch

    def render_then_arm(self, batch, progress_fns):
        results = real_render(self, batch, progress_fns)
        runtime.rendered = True
        return results

    NoopRenderer.render_batch = render_then_arm
    try:
        assert await asyncio.to_thread(run_generation, runtime, job.id) == "done"
    finally:
        NoopRenderer.render_batch = real_render
        runtime.db.close_sync()
    assert terminated
    done = await deliveries.generation(job.id)
    assert done.status == GenerationStatus.DONE and len(done.images) == 2
    assert await ledger(database, job.id) == ["debit"]


async def test_a_lost_commit_answer_does_not_discard_the_stored_images(
    service, deliveries, database, database_url, tmp_path, monkeypatch
):
    """The store's commit reached the database but its answer was lost: the retry finds the job
    done with this render's own files and keeps them."""
    from sqlalchemy.exc import OperationalError

    job = (await service.submit_imagine(ALICE, ImagineRequest("x", params=RenderParams(n=2)))).generation
    runtime = make_runtime(database_url, tmp_path)
    real_retrying = runtime.db.retrying
    failed = []

    def commit_then_lose_the_answer(fn, *args, **kwargs):
        if fn.__name__ == "commit" and not failed:
            with runtime.db.sync_session() as session:
                fn(session, *args, **kwargs)
            failed.append(True)
            try:
                raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))
            except OperationalError:
                pass  # what retrying() does with it: try again
        return real_retrying(fn, *args, **kwargs)

    monkeypatch.setattr(runtime.db, "retrying", commit_then_lose_the_answer)
    assert await asyncio.to_thread(run_generation, runtime, job.id) == "done"
    done = await deliveries.generation(job.id)
    assert len(done.images) == 2
    for image in done.images:
        assert runtime.store.path(image.storage_key).exists()
    runtime.db.close_sync()


async def test_a_render_that_lost_its_job_never_touches_the_stored_files(
    service, deliveries, database, database_url, tmp_path
):
    """Two renders of one job (the first's lease ran out while the database was away): the
    first to store wins; the other's files are deleted, the winner's stay."""
    job = (await service.submit_imagine(ALICE, ImagineRequest("x", params=RenderParams(n=1)))).generation
    first = make_runtime(database_url, tmp_path, name="first:1")
    second = make_runtime(database_url, tmp_path, name="second:2")
    claimed_first = await asyncio.to_thread(claim, first, job.id)
    await expire_leases(database, job.id)
    claimed_second = await asyncio.to_thread(claim, second, job.id)
    assert [j.attempt for j in claimed_first + claimed_second] == [1, 2]
    result = NoopRenderer().render(claimed_second[0], lambda *_: None)
    assert await asyncio.to_thread(results.store_result, second, claimed_second[0], result, 5) == "done"
    assert await asyncio.to_thread(results.store_result, first, claimed_first[0], result, 5) == "done"
    done = await deliveries.generation(job.id)
    assert [i.storage_key.rsplit("/", 1)[1] for i in done.images] == ["a2-1.png"]
    assert first.store.path(done.images[0].storage_key).exists()
    assert not first.store.path(done.images[0].storage_key.replace("a2-", "a1-")).exists()
    for runtime in (first, second):
        runtime.db.close_sync()


async def test_sweeper_requeues_expired_leases_and_republishes_lost_messages(
    service, deliveries, database, database_url, queue
):
    """Running jobs with a live lease are left alone; expired ones go back to queued and are
    published again. Queued jobs are published again only when the render queue is empty and
    their message is older than the threshold."""
    ids = [
        (await service.submit_imagine(ALICE, ImagineRequest("x", params=RenderParams(n=1)))).generation.id
        for _ in range(4)
    ]
    live, expired, old_queued, new_queued = ids
    now = utcnow()

    def arrange(session):
        session.execute(
            update(Generation)
            .where(Generation.id == live)
            .values(status="running", worker="w:1", attempts=1, heartbeat_at=now)
        )
        session.execute(
            update(Generation)
            .where(Generation.id == expired)
            .values(
                status="running",
                worker="w:2",
                attempts=1,
                heartbeat_at=now - timedelta(seconds=30),
                batch_leader_id=live,
                progress=0.5,
            )
        )
        session.execute(
            update(Generation).where(Generation.id == old_queued).values(enqueued_at=now - timedelta(seconds=60))
        )

    await database.run(arrange)
    db = Database(database_url)
    queue.enqueued.clear()
    waiting = [3]
    sweeper = Sweeper(db, queue, lambda: waiting[0], lease_s=20, interval_s=1, republish_after_s=30)
    assert sweeper.sweep() == {"requeued": [expired], "republished": []}
    requeued = await deliveries.generation(expired)
    assert requeued.status == GenerationStatus.QUEUED and requeued.progress == 0
    waiting[0] = 0
    assert sweeper.sweep() == {"requeued": [], "republished": [old_queued]}
    assert sweeper.sweep() == {"requeued": [], "republished": []}  # just published: not again
    assert queue.enqueued == [expired, old_queued]
    assert (await deliveries.generation(live)).status == GenerationStatus.RUNNING
    db.close_sync()


async def test_unreachable_broker_leaves_rows_for_the_next_sweep(service, deliveries, database, database_url):
    """A sweep whose publish fails changes nothing: the job is still found next time."""
    job = (await service.submit_imagine(ALICE, ImagineRequest("x", params=RenderParams(n=1)))).generation

    def stalled(session):
        session.execute(
            update(Generation)
            .where(Generation.id == job.id)
            .values(status="running", worker="w:1", attempts=1, heartbeat_at=utcnow() - timedelta(minutes=5))
        )

    await database.run(stalled)

    class DownQueue:
        def enqueue(self, generation_id, task_id):
            raise ConnectionError("broker down")

    db = Database(database_url)
    with pytest.raises(ConnectionError):
        Sweeper(db, DownQueue(), lambda: None, lease_s=20, interval_s=1, republish_after_s=30).sweep()
    assert (await deliveries.generation(job.id)).status == GenerationStatus.RUNNING
    db.close_sync()
