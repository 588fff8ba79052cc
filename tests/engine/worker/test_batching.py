"""Dynamic batching in the worker: compatible queued jobs render in one pipeline call."""

from __future__ import annotations

import asyncio
import io
from datetime import timedelta

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import update

from engine.domain.types import Actor, GenerationStatus, ImagineRequest, Platform, RenderParams
from engine.image_files import ImageStore
from engine.store.db import Database
from engine.store.models import Generation, utcnow
from engine.worker import results
from engine.worker.jobs import run_generation
from engine.worker.runtime import WorkerRuntime
from tests.conftest import assert_same_pixels
from tests.engine.worker.test_jobs import RecordingPublisher

ALICE = Actor(Platform.CONSOLE, "team-1", "alice", "Alice")
BOB = Actor(Platform.CONSOLE, "team-1", "bob", "Bob")


class CountingRenderer:
    """The real tiny renderer, counting pipeline calls and the jobs in each."""

    def __init__(self, real) -> None:
        self.real = real
        self.model_id = real.model_id
        self.calls: list[list[int]] = []

    def render_batch(self, batch, progress_fns):
        self.calls.append([job.generation_id for job in batch])
        return self.real.render_batch(batch, progress_fns)


@pytest.fixture
def runtime(database_url, tmp_path, tiny_renderer):
    db = Database(database_url)
    runtime = WorkerRuntime(
        db=db,
        store=ImageStore(tmp_path / "images"),
        publisher=RecordingPublisher(),
        renderer_factory=lambda: CountingRenderer(tiny_renderer),
        max_batch_images=8,
    )
    yield runtime
    db.sync_engine.dispose()


async def submit(service, actor=ALICE, n=1, seed=1, **params):
    request = ImagineRequest("a red star", seed=seed, params=RenderParams(n=n, **params))
    return (await service.submit_imagine(actor, request)).generation


async def run(runtime, job_id):
    return await asyncio.to_thread(run_generation, runtime, job_id)


def pixels(runtime, image) -> np.ndarray:
    with Image.open(io.BytesIO(runtime.store.get(image.storage_key))) as picture:
        return np.asarray(picture).astype(int)


async def test_compatible_jobs_render_in_one_call(service, deliveries, runtime):
    """Queued compatible jobs of different users render together; their tasks then do nothing."""
    first = await submit(service, n=1, seed=10)
    second = await submit(service, BOB, n=2, seed=20)
    third = await submit(service, n=1, seed=30)
    assert await run(runtime, first.id) == "done"
    assert runtime.renderer.calls == [[first.id, second.id, third.id]]
    for job in (first, second, third):
        done = await deliveries.generation(job.id)
        assert done.status == GenerationStatus.DONE and len(done.images) == job.cost
    assert await run(runtime, second.id) == "skipped"
    assert await run(runtime, third.id) == "skipped"
    assert runtime.renderer.calls == [[first.id, second.id, third.id]]
    # Each job got its own progress and wake-ups.
    assert {(second.id, "running"), (third.id, "running"), (third.id, "done")} <= set(runtime.publisher.events)


async def test_batched_images_equal_solo_renders(service, deliveries, runtime, tiny_renderer):
    """A batched job's images equal the same job rendered alone with the same seed."""
    alone = await submit(service, n=2, seed=77)
    assert await run(runtime, alone.id) == "done"
    leader = await submit(service, n=1, seed=5)
    again = await submit(service, BOB, n=2, seed=77)
    assert await run(runtime, leader.id) == "done"
    assert runtime.renderer.calls[-1] == [leader.id, again.id]
    solo = (await deliveries.generation(alone.id)).images
    batched = (await deliveries.generation(again.id)).images
    for a, b in zip(solo, batched, strict=True):
        assert_same_pixels(pixels(runtime, a), pixels(runtime, b))


async def test_incompatible_jobs_are_not_batched(service, runtime):
    """Jobs with other steps or aspect render in calls of their own."""
    first = await submit(service)
    other_steps = await submit(service, decoder_steps=3)
    other_aspect = await submit(service, aspect="16:9")
    await run(runtime, first.id)
    assert runtime.renderer.calls == [[first.id]]
    await run(runtime, other_steps.id)
    await run(runtime, other_aspect.id)
    assert runtime.renderer.calls == [[first.id], [other_steps.id], [other_aspect.id]]


async def test_batch_size_is_capped(service, runtime):
    """A batch holds at most max_batch_images images."""
    runtime.max_batch_images = 3
    ids = [(await submit(service, n=n)).id for n in (1, 2, 1, 1)]
    await run(runtime, ids[0])
    assert runtime.renderer.calls == [ids[:2]]
    await run(runtime, ids[2])
    assert runtime.renderer.calls == [ids[:2], ids[2:]]


async def test_jobs_of_a_crashed_batch_are_taken_over_once_the_lease_runs_out(service, deliveries, runtime, database):
    """When a batch's worker dies, a message for one of its jobs does nothing while the lease is
    live, and renders that job alone once it has run out."""
    leader = await submit(service)
    member = await submit(service, BOB)

    def crashed_mid_batch(session, beat):
        session.execute(
            update(Generation)
            .where(Generation.id == leader.id)
            .values(status="running", attempts=1, worker="gone:1", heartbeat_at=beat)
        )
        session.execute(
            update(Generation)
            .where(Generation.id == member.id)
            .values(status="running", attempts=1, worker="gone:1", batch_leader_id=leader.id, heartbeat_at=beat)
        )

    await database.run(crashed_mid_batch, utcnow())
    assert await run(runtime, member.id) == "skipped"  # its batch's worker may still be alive
    assert await run(runtime, leader.id) == "skipped"
    await database.run(crashed_mid_batch, utcnow() - timedelta(seconds=runtime.lease_s + 1))
    assert await run(runtime, member.id) == "done"
    assert await run(runtime, leader.id) == "done"
    assert runtime.renderer.calls == [[member.id], [leader.id]]
    assert (await deliveries.generation(member.id)).status == GenerationStatus.DONE
    assert (await service.quota(BOB)).used == 1 and (await service.quota(ALICE)).used == 1


async def test_cancelled_member_is_dropped_from_the_batch(service, deliveries, runtime, monkeypatch):
    """Cancelling one job of a batch drops it; the others still finish."""
    monkeypatch.setattr(results, "PROGRESS_INTERVAL_S", 0.0)
    loop = asyncio.get_running_loop()
    leader = await submit(service, seed=1)
    member = await submit(service, BOB, seed=2)
    real_render = runtime.renderer.real.render_batch

    def cancel_member_midway(batch, progress_fns):
        def wrap(fn, job_id):
            def on_progress(fraction, stage):
                if job_id == member.id and fraction > 0.3:
                    asyncio.run_coroutine_threadsafe(service.cancel(BOB, member.id), loop).result()
                fn(fraction, stage)

            return on_progress

        return real_render(batch, [wrap(fn, job.generation_id) for fn, job in zip(progress_fns, batch, strict=True)])

    monkeypatch.setattr(runtime.renderer.real, "render_batch", cancel_member_midway)
    assert await run(runtime, leader.id) == "done"
    dropped = await deliveries.generation(member.id)
    assert dropped.status == GenerationStatus.CANCELLED and dropped.images == ()
    assert (await service.quota(BOB)).used == 0
