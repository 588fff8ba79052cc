"""The worker's job body on the real tiny model: store, redeliver, fail, cancel, vary."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from PIL import Image
from sqlalchemy import update

from engine.domain.types import (
    Actor,
    GenerationStatus,
    ImageRef,
    ImagineRequest,
    Platform,
    RenderParams,
    VariationRequest,
)
from engine.image_files import ImageStore
from engine.images import png_metadata
from engine.store.db import Database
from engine.store.models import Generation
from engine.worker import claiming, results
from engine.worker.jobs import run_generation
from engine.worker.runtime import MAX_ATTEMPTS, WorkerRuntime

ALICE = Actor(Platform.CONSOLE, "team-1", "alice", "Alice")


class RecordingPublisher:
    def __init__(self) -> None:
        self.events: list[tuple[int, str]] = []

    def publish(self, generation_id: int, status: str, progress: float) -> None:
        self.events.append((generation_id, status))


@pytest.fixture
def runtime(database_url, tmp_path, tiny_renderer):
    db = Database(database_url)
    runtime = WorkerRuntime(
        db=db,
        store=ImageStore(tmp_path / "images"),
        publisher=RecordingPublisher(),
        renderer_factory=lambda: tiny_renderer,
    )
    yield runtime
    db.sync_engine.dispose()


async def run(runtime, generation_id) -> str:
    return await asyncio.to_thread(run_generation, runtime, generation_id)


async def submit(service, prompt="a red star", n=4, seed=11):
    return (await service.submit_imagine(ALICE, ImagineRequest(prompt, seed=seed, params=RenderParams(n=n)))).generation


async def test_job_renders_stores_and_publishes(service, deliveries, runtime):
    """A job ends done with its PNGs, grid, embeddings and metadata stored, and wake-ups sent."""
    job = await submit(service)
    assert await run(runtime, job.id) == "done"
    done = await deliveries.generation(job.id)
    assert done.status == GenerationStatus.DONE and done.progress == 1.0
    assert [i.index for i in done.images] == [1, 2, 3, 4]
    assert [i.seed for i in done.images] == [11, 12, 13, 14]
    for image in done.images:
        data = runtime.store.get(image.storage_key)
        meta = png_metadata(data)
        assert meta["prompt"] == "a red star"
        assert meta["seed"] == str(image.seed)
        assert len(meta["weights_sha256"]) == 64
        assert "torch" in json.loads(meta["versions"])
    assert runtime.store.path(done.grid_key).exists()
    assert (job.id, "running") in runtime.publisher.events
    assert runtime.publisher.events[-1] == (job.id, "done")


async def test_redelivered_job_renders_once(service, deliveries, runtime):
    """A second delivery of a finished job's task does nothing: one set of images."""
    job = await submit(service)
    await run(runtime, job.id)
    assert await run(runtime, job.id) == "skipped"
    assert len((await deliveries.generation(job.id)).images) == 4


def pixels(runtime, image) -> bytes:
    with Image.open(io.BytesIO(runtime.store.get(image.storage_key))) as picture:
        return picture.tobytes()


async def test_same_request_same_seed_same_pixels(service, deliveries, runtime):
    """Rendering the same request with the same seed gives byte-identical images on the CPU."""
    first = await submit(service, seed=5, n=2)
    second = await submit(service, seed=5, n=2)
    await run(runtime, first.id)
    await run(runtime, second.id)
    a = await deliveries.generation(first.id)
    b = await deliveries.generation(second.id)
    assert [pixels(runtime, i) for i in a.images] == [pixels(runtime, i) for i in b.images]


async def test_render_failure_fails_and_refunds(service, deliveries, runtime, database):
    """A crashing renderer marks the job failed with a short reason and refunds it."""

    class Broken:
        model_id = "broken"

        def render_batch(self, jobs, progress_fns):
            raise RuntimeError("CUDA error: device-side assert (details only in the log)")

    runtime._renderer = Broken()
    job = await submit(service)
    assert await run(runtime, job.id) == "failed"
    failed = await deliveries.generation(job.id)
    assert (failed.status, failed.error) == ("failed", "the renderer failed (RuntimeError)")
    assert (await service.quota(ALICE)).used == 0
    assert runtime.publisher.events[-1] == (job.id, "failed")


async def test_claim_whose_answer_was_lost_is_rendered_once(service, deliveries, runtime, monkeypatch):
    """The claim's UPDATE committed (autocommit, on PostgreSQL) but its answer was lost with the
    connection: the retried claim finds the row running on this worker and renders it — once, on
    its first attempt — instead of taking it for another worker's duplicate."""
    from sqlalchemy.exc import OperationalError

    real = claiming._claim_fast
    calls = []

    def lose_the_first_answer(session, runtime, generation_id):
        answer = real(session, runtime, generation_id)
        calls.append(answer)
        if len(calls) == 1:
            raise OperationalError("UPDATE", {}, Exception("server closed the connection unexpectedly"))
        return answer

    monkeypatch.setattr(claiming, "_claim_fast", lose_the_first_answer)
    job = await submit(service)
    assert await run(runtime, job.id) == "done"
    assert len(calls) == 2  # PostgreSQL: the retry finds it claimed (SQLite rolled the claim back)
    done = await deliveries.generation(job.id)
    assert (done.status, len(done.images)) == ("done", 4)
    with runtime.db.sync_session() as session:
        assert session.get(Generation, job.id).attempts == 1


async def test_messages_with_nothing_to_do_lock_no_row(service, deliveries, runtime, monkeypatch):
    """A finished job's redelivered message, and a duplicate message for a job under another
    worker's live lease (under load every job claimed into a batch still gets its own message),
    are settled by one plain read: the row is never locked and nothing is written. Once that
    lease runs out, the next message locks the row and takes the job over."""
    from datetime import timedelta

    from engine.store.models import utcnow

    locked = []
    real = claiming._claim_row

    def recording(session, runtime, generation_id):
        locked.append(generation_id)
        return real(session, runtime, generation_id)

    monkeypatch.setattr(claiming, "_claim_row", recording)
    finished = await submit(service, n=1)
    assert await run(runtime, finished.id) == "done"
    assert await run(runtime, finished.id) == "skipped"

    held = await submit(service, n=1)
    now = utcnow()
    elsewhere = {
        "status": "running",
        "worker": "gpu-7@elsewhere",
        "heartbeat_at": now,
        "started_at": now,
        "attempts": 1,
    }
    with runtime.db.sync_session() as session:
        session.execute(update(Generation).where(Generation.id == held.id).values(**elsewhere))
    assert await run(runtime, held.id) == "skipped"
    assert locked == []
    with runtime.db.sync_session() as session:
        row = session.get(Generation, held.id)
        assert (row.status, row.worker, row.attempts) == ("running", "gpu-7@elsewhere", 1)

    expired = now - timedelta(seconds=runtime.lease_s + 5)
    with runtime.db.sync_session() as session:
        session.execute(
            update(Generation).where(Generation.id == held.id).values(heartbeat_at=expired, started_at=expired)
        )
    assert await run(runtime, held.id) == "done"
    assert locked == [held.id]
    with runtime.db.sync_session() as session:
        assert session.get(Generation, held.id).attempts == 2


async def test_job_that_cannot_be_read_at_its_claim_is_failed_and_refunded(service, deliveries, runtime, monkeypatch):
    """A claimed job whose inputs are gone (its source image deleted meanwhile) is failed with
    the reason and refunded in a transaction of its own — claimed and failed, never left running."""

    def gone(session, generation, store):
        raise claiming.JobFailed("the source image no longer exists")

    monkeypatch.setattr(claiming, "render_job_from_row", gone)
    job = await submit(service)
    assert await run(runtime, job.id) == "skipped"
    failed = await deliveries.generation(job.id)
    assert (failed.status, failed.error) == ("failed", "the source image no longer exists")
    assert (await service.quota(ALICE)).used == 0
    assert runtime.publisher.events[-1] == (job.id, "failed")


async def test_cancel_during_render_stops_it(service, deliveries, runtime, monkeypatch):
    """Cancelling a running job stops the render at the next step: no images, refunded once."""
    monkeypatch.setattr(results, "PROGRESS_INTERVAL_S", 0.0)
    loop = asyncio.get_running_loop()
    real = runtime.renderer

    class CancelsMidway:
        model_id = real.model_id

        def render_batch(self, jobs, progress_fns):
            (job,), (progress,) = jobs, progress_fns

            def on_progress(fraction, stage):
                if fraction > 0.3:
                    asyncio.run_coroutine_threadsafe(service.cancel(ALICE, job.generation_id), loop).result()
                progress(fraction, stage)

            return real.render_batch([job], [on_progress])

    runtime._renderer = CancelsMidway()
    job = await submit(service)
    assert await run(runtime, job.id) == "aborted"
    cancelled = await deliveries.generation(job.id)
    assert cancelled.status == GenerationStatus.CANCELLED and cancelled.images == ()
    assert (await service.quota(ALICE)).used == 0


async def test_worker_lost_three_times_fails_the_job(service, deliveries, runtime, database):
    """A job whose worker died on every attempt is failed and refunded instead of looping."""
    job = await submit(service)

    def crashed_thrice(session):
        session.execute(
            update(Generation).where(Generation.id == job.id).values(status="running", attempts=MAX_ATTEMPTS)
        )

    await database.run(crashed_thrice)
    assert await run(runtime, job.id) == "skipped"
    failed = await deliveries.generation(job.id)
    assert failed.status == GenerationStatus.FAILED and "stopped 3 times" in failed.error
    assert (await service.quota(ALICE)).used == 0


async def test_variation_renders_from_the_stored_embedding(service, deliveries, runtime):
    """A variation decodes its parent's stored CLIP image embedding (and source image)."""
    root = await submit(service)
    await run(runtime, root.id)
    variation = (
        await service.submit_variation(
            ALICE, VariationRequest(ImageRef(root.id, 2), params=RenderParams(n=2, strength=0.6))
        )
    ).generation
    assert await run(runtime, variation.id) == "done"
    done = await deliveries.generation(variation.id)
    meta = png_metadata(runtime.store.get(done.images[0].storage_key))
    assert meta["operation"] == "variation" and meta["strength"] == "0.6"


async def test_variation_of_an_image_from_other_weights_encodes_it_again(service, deliveries, runtime, monkeypatch):
    """An image drawn by other weights (before a model update) has its stored embedding in that
    model's CLIP space: its variation encodes the stored picture with the current image tower
    instead of decoding the foreign embedding. An image of the current weights uses its stored
    embedding, with no encoding."""
    from engine.store.models import Generation as Row

    renderer = runtime.renderer
    encoded = []
    real = renderer.encode_images

    def recording(pictures):
        encoded.append(len(pictures))
        return real(pictures)

    monkeypatch.setattr(renderer, "encode_images", recording)
    root = await submit(service, n=1)
    await run(runtime, root.id)

    async def vary() -> None:
        request = VariationRequest(ImageRef(root.id, 1), params=RenderParams(n=1, strength=1.0))
        variation = (await service.submit_variation(ALICE, request)).generation
        assert await run(runtime, variation.id) == "done"

    encoded.clear()
    await vary()
    assert encoded == []  # the stored embedding: its source not encoded

    def drawn_by_older_weights(session):
        row = session.get(Row, root.id)
        row.render_info = {**row.render_info, "weights_sha256": "0" * 64}

    await service.db.run(drawn_by_older_weights)
    encoded.clear()
    await vary()
    assert encoded == [1]  # the source picture, encoded by this model's tower


async def test_blend_renders_from_stored_embeddings(service, deliveries, runtime):
    """A blend slerps its sources' stored embeddings and decodes the result."""
    a = await submit(service, "a red star")
    b = await submit(service, "a blue ring")
    await run(runtime, a.id)
    await run(runtime, b.id)
    blend = (
        await service.submit_blend(ALICE, [ImageRef(a.id, 1), ImageRef(b.id, 1)], [1, 1], RenderParams(n=2))
    ).generation
    assert await run(runtime, blend.id) == "done"
    assert len((await deliveries.generation(blend.id)).images) == 2


async def test_upscale_doubles_the_size(service, deliveries, runtime):
    """An upscale runs the model's upsampler on the stored image: one image, larger by its factor."""
    root = await submit(service, n=2)
    await run(runtime, root.id)
    up = (await service.submit_upscale(ALICE, ImageRef(root.id, 2))).generation
    assert await run(runtime, up.id) == "done"
    done = await deliveries.generation(up.id)
    source = (await deliveries.generation(root.id)).images[1]
    assert (done.images[0].width, done.images[0].height) == (source.width * 2, source.height * 2)


async def test_upload_variation_encodes_with_clip(service, deliveries, runtime):
    """A variation of an uploaded image is encoded by the model's CLIP image encoder."""
    from engine.images import encode_png

    key = runtime.store.put("uploads/test.png", encode_png(Image.new("RGB", (40, 30), (0, 200, 0))))
    from engine.store.models import Generation as Row

    job = await submit(service, n=2)

    def as_upload(session):
        row = session.get(Row, job.id)
        row.kind = "variation"
        row.params = {**row.params, "source_key": key, "source": "upload"}

    await service.db.run(as_upload)
    assert await run(runtime, job.id) == "done"
    meta = png_metadata(runtime.store.get((await deliveries.generation(job.id)).images[0].storage_key))
    assert meta["operation"] == "variation"


async def test_model_without_upsampler_cannot_upscale(service, deliveries, runtime, tiny_renderer, monkeypatch):
    """Asking a model for what it cannot do fails the job with that reason, refunded."""
    root = await submit(service, n=1)
    await run(runtime, root.id)
    monkeypatch.setattr(tiny_renderer.pipe, "super_res_first", None)
    up = (await service.submit_upscale(ALICE, ImageRef(root.id, 1))).generation
    assert await run(runtime, up.id) == "failed"
    failed = await deliveries.generation(up.id)
    assert "has no upsampler, so it cannot upscale" in failed.error


async def test_text_diff_and_strip_render(service, deliveries, runtime):
    """A text-diff variation and an interpolation strip render through the real model."""
    root = await submit(service, "a red star")
    await run(runtime, root.id)
    edit = (
        await service.submit_variation(
            ALICE, VariationRequest(ImageRef(root.id, 1), params=RenderParams(n=1), toward="in winter")
        )
    ).generation
    assert await run(runtime, edit.id) == "done"
    meta = png_metadata(runtime.store.get((await deliveries.generation(edit.id)).images[0].storage_key))
    assert json.loads(meta["edit"]) == {"from": "a red star", "toward": "in winter", "amount": 0.35}
    strip = (await service.submit_blend(ALICE, [ImageRef(root.id, 1), ImageRef(root.id, 2)], strip=4)).generation
    assert await run(runtime, strip.id) == "done"
    done = await deliveries.generation(strip.id)
    with Image.open(runtime.store.path(done.grid_key)) as picture:
        frame = done.images[0]
        assert picture.size == (4 * frame.width + 3 * 2, frame.height)
    assert {i.seed for i in done.images} == {strip.seed}  # one seed: only the embedding moves
