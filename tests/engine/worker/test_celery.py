"""Celery end to end on real brokers: submit → worker renders → images stored → delivered.

The worker is a real Celery worker (in-process solo pool on Redis, RabbitMQ and the embedded
SQLite broker; a separate prefork process for the SIGKILL test) and the model is the tiny real
unCLIP stack loaded through the real loader.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select

from bot.delivery import Delivery
from bot.runtime import build_bot_runtime
from engine.config import Settings
from engine.domain.types import Actor, GenerationStatus, ImagineRequest, Platform, RenderParams
from engine.store.models import Image, QuotaLedgerEntry
from engine.worker.embedded import EmbeddedWorker
from tests.conftest import RABBIT_URL, require

ALICE = Actor(Platform.CONSOLE, "team-1", "alice", "Alice")
REDIS_TEST_URL = "redis://127.0.0.1:6379/9"


def make_settings(tmp_path, sqlite_template, tiny_model_dir, broker_url: str) -> Settings:
    settings = Settings()
    settings.paths.data_dir = tmp_path / "data"
    settings.paths.data_dir.mkdir(parents=True, exist_ok=True)
    db_file = settings.paths.data_dir / "imagine.db"
    shutil.copyfile(sqlite_template, db_file)
    settings.database.url = f"sqlite:///{db_file}"
    settings.broker.url = broker_url
    settings.broker.heartbeat_s = 0  # RabbitMQ: the in-process worker stops in ~1 s instead of ~10
    settings.render.model = str(tiny_model_dir)
    return settings


def purge(settings: Settings, app) -> None:
    """Drop messages a previous run may have left on a shared broker."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in ("gpu", "default"):
            with contextlib.suppress(Exception):  # the queue may not exist yet
                channel.queue_purge(queue)


class RecordingTarget:
    platform = Platform.CONSOLE

    def __init__(self) -> None:
        self.delivered: dict[int, object] = {}
        self.progress: list[tuple[int, str, float]] = []
        self.arrived = asyncio.Event()

    async def show_progress(self, job) -> None:
        self.progress.append((job.id, str(job.status), job.progress))

    async def deliver(self, job) -> None:
        self.delivered[job.id] = job
        self.arrived.set()


async def imagine_through(settings: Settings) -> None:
    runtime = build_bot_runtime(settings)
    purge(settings, runtime.celery_app)
    target = RecordingTarget()
    delivery = Delivery(runtime.deliveries, target, runtime.wakeups(), sweep_interval_s=0.5)
    worker = EmbeddedWorker(runtime.celery_app)
    await asyncio.to_thread(worker.start)
    await delivery.start()
    try:
        submitted = await runtime.service.submit_imagine(
            ALICE, ImagineRequest("a blue ring", seed=3, params=RenderParams(n=2))
        )
        job_id = submitted.generation.id
        await asyncio.wait_for(target.arrived.wait(), timeout=60)
        job = target.delivered[job_id]
        assert job.status == GenerationStatus.DONE
        assert [i.index for i in job.images] == [1, 2]
        for image in job.images:
            assert runtime.store.path(image.storage_key).stat().st_size > 0
        # The delivery loop marks the job delivered right after deliver() returns.
        for _ in range(50):
            if (await runtime.deliveries.generation(job_id)).delivered_at is not None:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the job was never marked delivered")
    finally:
        await delivery.stop()
        await asyncio.to_thread(worker.stop)
        await runtime.close()


@pytest.mark.redis
async def test_redis_broker(tmp_path, sqlite_template, tiny_model_dir):
    """On Redis (with pub/sub wake-ups) a job is rendered, stored and delivered."""
    require("redis")
    import redis

    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    await imagine_through(make_settings(tmp_path, sqlite_template, tiny_model_dir, REDIS_TEST_URL))


@pytest.mark.rabbitmq
async def test_rabbitmq_broker(tmp_path, sqlite_template, tiny_model_dir):
    """On RabbitMQ (polling for wake-ups) a job is rendered, stored and delivered."""
    require("rabbitmq")
    await imagine_through(make_settings(tmp_path, sqlite_template, tiny_model_dir, RABBIT_URL))


async def test_embedded_broker(tmp_path, sqlite_template, tiny_model_dir):
    """On the embedded SQLite broker (no server at all) a job is rendered and delivered."""
    await imagine_through(make_settings(tmp_path, sqlite_template, tiny_model_dir, ""))


@pytest.mark.redis
@pytest.mark.slow
async def test_sigkilled_worker_job_is_redelivered_and_finishes_once(tmp_path, sqlite_template, tiny_model_dir):
    """A worker process SIGKILLed mid-render: the job is redelivered and finishes once,
    with one set of images and one charge."""
    require("redis")
    import redis

    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    settings = make_settings(tmp_path, sqlite_template, tiny_model_dir, REDIS_TEST_URL)
    settings.limits.max_steps = 2000
    env = {
        **os.environ,
        "IMAGINE_DATA_DIR": str(settings.data_dir),
        "IMAGINE_DB_URL": settings.database_url,
        "IMAGINE_BROKER_URL": REDIS_TEST_URL,
        "IMAGINE_RENDER_MODEL": str(tiny_model_dir),
        "IMAGINE_RENDER_TORCH_THREADS": "1",
        # The dead child's job is taken up again once its lease runs out (20 s by default).
        "IMAGINE_WORKER_HEARTBEAT_S": "1",
        "IMAGINE_WORKER_LEASE_S": "4",
        "IMAGINE_WORKER_SWEEP_INTERVAL_S": "0.5",
    }
    # Its log goes to a file (a pipe nobody reads blocks the worker once full) and into the failure.
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "bot", "worker", "--pool", "prefork", "--concurrency", "1", "--loglevel", "INFO"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    runtime = build_bot_runtime(settings)
    try:
        # Enough steps that the render is certainly still going when it is killed.
        request = ImagineRequest(
            "a green heart", seed=9, params=RenderParams(n=4, prior_steps=100, decoder_steps=200, super_res_steps=100)
        )
        job_id = (await runtime.service.submit_imagine(ALICE, request)).generation.id

        first = await wait_for_job(runtime, job_id, lambda j: j.status == "running" and j.progress > 0.05)
        victim = int(first.worker.rsplit(":", 1)[1])
        os.kill(victim, signal.SIGKILL)

        done = await wait_for_job(runtime, job_id, lambda j: j.status != "running" or j.worker != first.worker)
        done = await wait_for_job(runtime, job_id, lambda j: j.status == "done", timeout=180)
        assert done.attempts == 2
        assert len(done.images) == 4

        def counts(session):
            images = session.scalar(select(func.count()).select_from(Image).where(Image.generation_id == job_id))
            kinds = session.scalars(select(QuotaLedgerEntry.kind).where(QuotaLedgerEntry.generation_id == job_id)).all()
            return images, sorted(kinds)

        assert await runtime.db.run(counts) == (4, ["debit"])
        assert (await runtime.service.quota(ALICE)).used == 4
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- worker log (tail) ---\n{log_path.read_text()[-6000:]}") from None
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        await runtime.close()


def start_worker(env: dict[str, str], log_file) -> subprocess.Popen:
    """`imagine-bot worker` as production runs it: its own process, the solo pool."""
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "worker", "--pool", "solo", "--loglevel", "INFO"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log_file.open("w"),
    )


def stop_worker(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()


@pytest.mark.redis
@pytest.mark.slow
async def test_killed_solo_worker_on_redis_job_is_back_within_the_lease(tmp_path, sqlite_template, tiny_model_dir):
    """A whole solo-pool worker SIGKILLed mid-render on Redis (which would give its message back
    only after the 23-minute visibility timeout): the job's lease runs out, a live worker's sweeper
    puts it back on the queue, and it finishes within seconds — once, charged once."""
    require("redis")
    import redis

    redis_url = "redis://127.0.0.1:6379/10"
    redis.Redis.from_url(redis_url).flushdb()
    settings = make_settings(tmp_path, sqlite_template, tiny_model_dir, redis_url)
    env = {
        **os.environ,
        "IMAGINE_DATA_DIR": str(settings.data_dir),
        "IMAGINE_DB_URL": settings.database_url,
        "IMAGINE_BROKER_URL": redis_url,
        "IMAGINE_RENDER_BACKEND": "noop",
        "IMAGINE_RENDER_NOOP_DELAY_MS": "4000",
        "IMAGINE_OPS_PORT": "0",
        "IMAGINE_WORKER_HEARTBEAT_S": "0.5",
        "IMAGINE_WORKER_LEASE_S": "3",
        "IMAGINE_WORKER_SWEEP_INTERVAL_S": "0.5",
    }
    first = start_worker(env, tmp_path / "first.log")
    second = None
    runtime = build_bot_runtime(settings)
    try:
        job_id = (
            await runtime.service.submit_imagine(ALICE, ImagineRequest("a green heart", params=RenderParams(n=2)))
        ).generation.id
        running = await wait_for_job(runtime, job_id, lambda j: j.status == "running" and j.progress > 0)
        assert int(running.worker.rsplit(":", 1)[1]) == first.pid
        first.kill()  # SIGKILL: the whole worker, its consumer and its unacked message with it
        first.wait()
        killed_at = time.monotonic()
        second = start_worker(env, tmp_path / "second.log")
        done = await wait_for_job(runtime, job_id, lambda j: j.status == "done", timeout=60)
        assert time.monotonic() - killed_at < 30
        assert done.attempts == 2 and len(done.images) == 2

        def ledger(session):
            return sorted(
                session.scalars(select(QuotaLedgerEntry.kind).where(QuotaLedgerEntry.generation_id == job_id)).all()
            )

        assert await runtime.db.run(ledger) == ["debit"]
        assert (await runtime.service.quota(ALICE)).used == 2
    finally:
        stop_worker(first)
        if second is not None:
            stop_worker(second)
        await runtime.close()


async def wait_for_job(runtime, job_id, predicate, timeout=120):
    """Poll the job row (with the columns the view leaves out) until `predicate` holds."""
    from engine.store.models import Generation

    deadline = time.monotonic() + timeout
    row = None
    while time.monotonic() < deadline:

        def read(session):
            row = session.get(Generation, job_id, populate_existing=True)
            return row, list(row.images)

        row, images = await runtime.db.run(read)
        row.images = images
        if predicate(row):
            return row
        await asyncio.sleep(0.1)
    # Where it stopped, so a rare failure (seen once in CI: the redelivered job not done in 180 s)
    # says whether the job was never taken up again, stuck running, or failed.
    last = (
        None
        if row is None
        else {
            "status": row.status,
            "attempts": row.attempts,
            "worker": row.worker,
            "progress": row.progress,
            "error": row.error,
        }
    )
    raise AssertionError(f"job {job_id} did not reach the expected state within {timeout} s; last seen {last}")


@pytest.mark.parametrize("broker_url", ["redis://127.0.0.1:1/0", "amqp://guest:guest@127.0.0.1:1//"])
async def test_unreachable_broker_is_reported_and_nothing_is_charged(
    tmp_path, sqlite_template, tiny_model_dir, broker_url
):
    """With the broker down, a submit is refused within the publish timeout: the job is marked
    failed, the quota refunded, and the user told the queue is down."""
    from engine.domain.errors import QueueUnavailable

    settings = make_settings(tmp_path, sqlite_template, tiny_model_dir, broker_url)
    settings.broker.publish_timeout_s = 1.0
    runtime = build_bot_runtime(settings)
    started = time.monotonic()
    try:
        with pytest.raises(QueueUnavailable, match="render queue is down"):
            await runtime.service.submit_imagine(ALICE, ImagineRequest("a cat", params=RenderParams(n=2)))
        assert time.monotonic() - started < 15
        job = await runtime.service.job_for_actor(ALICE, None)
        assert job.status == GenerationStatus.FAILED
        assert (await runtime.service.quota(ALICE)).used == 0
    finally:
        await runtime.close()


def test_embedded_broker_polls_every_20_ms(tmp_path):
    """The embedded broker's URL names our transport, so kombu uses it (a URL scheme overrides
    Celery's broker_transport): a queued job waits ~20 ms for the worker, not up to a second."""
    from engine.config import Settings
    from engine.worker.app import build_app
    from engine.worker.sqlite_broker import POLLING_INTERVAL_S, Transport

    settings = Settings()
    settings.paths.data_dir = tmp_path
    settings.broker.url = ""
    connection = build_app(settings).connection_for_read()
    assert isinstance(connection.transport, Transport)
    assert connection.transport.polling_interval == POLLING_INTERVAL_S


def test_embedded_broker_waits_briefly_so_a_stop_is_seen(tmp_path):
    """Celery's worker loop asks for 2 s waits and sees a stop request only between them: the
    embedded transport shortens a bounded wait, so an embedded worker stops promptly; an
    unbounded wait is left unbounded."""
    from unittest.mock import patch

    from kombu.transport import sqlalchemy as kombu_sqlalchemy

    from engine.worker.app import build_app
    from engine.worker.sqlite_broker import MAX_DRAIN_WAIT_S

    settings = Settings()
    settings.paths.data_dir = tmp_path
    settings.broker.url = ""
    asked: list[float | None] = []

    def record(self, connection, timeout=None):
        asked.append(timeout)

    with (
        build_app(settings).connection_for_read() as connection,
        patch.object(kombu_sqlalchemy.Transport, "drain_events", record),
    ):
        for timeout in (2.0, 0.05, None):
            connection.transport.drain_events(connection.connection, timeout=timeout)
    assert asked == [MAX_DRAIN_WAIT_S, 0.05, None]


@pytest.mark.redis
async def test_a_redis_that_accepts_but_does_not_answer_is_given_up_on_in_time(
    tmp_path, sqlite_template, tiny_model_dir, private_redis
):
    """Redis paused (it accepts connections, answers nothing): a submit is refused within the
    publish timeout — not three times it — the job failed and refunded, the user told."""
    import redis

    from engine.domain.errors import QueueUnavailable

    settings = make_settings(tmp_path, sqlite_template, tiny_model_dir, private_redis)
    settings.broker.publish_timeout_s = 1.0
    runtime = build_bot_runtime(settings)
    try:
        await runtime.service.submit_imagine(ALICE, ImagineRequest("warm", params=RenderParams(n=1)))
        redis.Redis.from_url(private_redis).execute_command("CLIENT", "PAUSE", "10000", "ALL")
        started = time.monotonic()
        with pytest.raises(QueueUnavailable):
            await runtime.service.submit_imagine(ALICE, ImagineRequest("a cat", params=RenderParams(n=2)))
        assert time.monotonic() - started < 2.0
        job = await runtime.service.job_for_actor(ALICE, None)
        assert job.status == GenerationStatus.FAILED
        assert (await runtime.service.quota(ALICE)).used == 1  # the warm-up job only
    finally:
        await runtime.close()
