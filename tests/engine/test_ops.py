"""Operations: health and readiness endpoints, Prometheus metrics, and logs without secrets."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import urllib.error
import urllib.request

import pytest

from engine import metrics
from engine.logs import JsonFormatter, RedactingFilter, job_context, register_secrets
from engine.ops import OpsServer, broker_check, database_check, queue_depth_hook
from engine.store.db import Database


def get(server: OpsServer, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def ops_server():
    servers = []

    def start(**kwargs) -> OpsServer:
        server = OpsServer("127.0.0.1", 0, cache_s=0, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_health_and_readiness(ops_server, sqlite_url, tmp_path):
    """/healthz answers while the process runs; /readyz is 200 only when every check passes."""
    from engine.config import Settings
    from engine.worker.app import build_app

    settings = Settings()
    settings.paths.data_dir = tmp_path
    app = build_app(settings)  # the embedded broker: a SQLite file
    server = ops_server(checks={"database": database_check(Database(sqlite_url)), "broker": broker_check(app)})
    assert get(server, "/healthz") == (200, b"ok\n")
    status, body = get(server, "/readyz")
    assert status == 200 and json.loads(body) == {"ready": True, "checks": {"database": "ok", "broker": "ok"}}


def test_not_ready_says_why(ops_server):
    """With the database down, /readyz answers 503 and names the failed check."""
    server = ops_server(
        checks={"database": database_check(Database("postgresql://postgres@127.0.0.1:1/x")), "model": lambda: None}
    )
    status, body = get(server, "/readyz")
    report = json.loads(body)
    assert status == 503 and report["ready"] is False
    assert report["checks"]["model"] == "ok" and "OperationalError" in report["checks"]["database"]
    assert get(server, "/nope")[0] == 404


async def test_metrics_count_jobs_and_queue_depth(ops_server, service, database, database_url, tmp_path, tiny_renderer):
    """/metrics shows the queue depth read from the database and what the worker rendered."""
    from engine.domain.types import Actor, ImagineRequest, Platform, RenderParams
    from engine.image_files import ImageStore
    from engine.worker.jobs import run_generation
    from engine.worker.runtime import WorkerRuntime
    from tests.engine.worker.test_jobs import RecordingPublisher

    actor = Actor(Platform.CONSOLE, "t", "u")
    jobs = [
        (await service.submit_imagine(actor, ImagineRequest("x", params=RenderParams(n=1)))).generation
        for _ in range(3)
    ]
    sync_db = Database(database_url)
    server = ops_server(before_scrape=[queue_depth_hook(sync_db)])
    assert 'imagine_queue_depth{queue="gpu"} 3.0' in get(server, "/metrics")[1].decode()

    done_before = metrics.JOBS.labels(status="done")._value.get()
    images_before = metrics.IMAGES._value.get()
    runtime = WorkerRuntime(
        db=sync_db,
        store=ImageStore(tmp_path / "images"),
        publisher=RecordingPublisher(),
        renderer_factory=lambda: tiny_renderer,
        max_batch_images=1,
    )
    await asyncio.to_thread(run_generation, runtime, jobs[0].id)
    text = get(server, "/metrics")[1].decode()
    assert 'imagine_queue_depth{queue="gpu"} 2.0' in text
    assert metrics.JOBS.labels(status="done")._value.get() == done_before + 1
    assert metrics.IMAGES._value.get() == images_before + 1
    assert 'imagine_job_seconds_count{phase="render"}' in text
    sync_db.sync_engine.dispose()


def test_failure_reasons_have_few_labels():
    """Failure messages map onto a handful of labels (job ids never become label values)."""
    assert metrics.failure_reason("the render took longer than the time limit") == "timeout"
    assert metrics.failure_reason("the GPU ran out of memory") == "out_of_memory"
    assert metrics.failure_reason("the worker stopped 3 times while rendering it") == "worker_lost"
    assert metrics.failure_reason("model x has no upsampler, so it cannot upscale") == "unsupported"
    assert metrics.failure_reason("the renderer failed (RuntimeError)") == "render_error"


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.capture.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_logs_never_show_tokens():
    """Bot tokens, Slack tokens, interaction URLs, configured secrets and URL passwords are
    redacted — in messages, in arguments and in tracebacks."""
    register_secrets(["correct-horse-battery-staple"])
    logger, stream = capture(logging.Formatter("%(message)s"))
    discord_token = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GhIjKl.abcdefghijklmnopqrstuvwxyz01234"
    interaction = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDphYmNkZWZnaGlqa2xtbm9w"
    logger.info("login with %s", discord_token)
    logger.debug("PATCH https://discord.com/api/v10/webhooks/1234/%s/messages/@original", interaction)
    logger.info("slack client xoxb-123456789012-123456789012-abcdefABCDEF and xapp-1-A0-1-abcdef0123")
    logger.info("signing secret correct-horse-battery-staple loaded")
    logger.info("database postgresql://imagine:hunter2@db:5432/imagine")
    try:
        raise RuntimeError(f"request failed: /interactions/99/{interaction}/callback")
    except RuntimeError:
        logger.exception("callback failed")
    text = stream.getvalue()
    for secret in (discord_token, interaction, "xoxb-1234", "xapp-1-A0", "correct-horse", "hunter2"):
        assert secret not in text
    assert "/webhooks/1234/[redacted]" in text  # the id stays: useful, not secret


def test_json_lines_carry_the_job_id():
    """In JSON format each line is one object, with the job id while a job is being handled."""
    logger, stream = capture(JsonFormatter())
    with job_context(42):
        logger.info("rendering %d images", 4)
    logger.info("idle")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["job_id"] == 42 and first["message"] == "rendering 4 images"
    assert "job_id" not in second
