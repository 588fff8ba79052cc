"""Shared fixtures: real databases (SQLite and PostgreSQL), real brokers, the tiny real model.

Services: PostgreSQL, Redis and RabbitMQ are used where they run on 127.0.0.1 (.ci/run starts
them). A test that needs one that is absent is skipped with the reason — except under CI=true,
where it fails: CI must never pass by skipping them.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PG_ADMIN_URL = os.environ.get("IMAGINE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("IMAGINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBIT_URL = os.environ.get("IMAGINE_TEST_RABBIT_URL", "amqp://guest:guest@127.0.0.1:5672//")

_PORTS = {"postgres": 5432, "redis": 6379, "rabbitmq": 5672}


def service_up(name: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", _PORTS[name]), timeout=0.5):
            return True
    except OSError:
        return False


def assert_same_pixels(a, b, tolerance: int = 2, flipped: float = 0.005) -> None:
    """Two renders of one image agree: every pixel value within `tolerance`, except at most a
    `flipped` share of them. The tiny random stacks' outputs sit 96 % on the clamp at 0 or 255,
    with pre-clamp values so large that float rounding (a batch's other GEMM shapes, another
    thread count) now and then flips a value sitting on the clamp's edge from 0 to 254 — seen in
    CI while the networks agreed within 2e-6. A wrong seed or a wrong image changes about half."""
    import numpy as np

    differences = np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int))
    share = float((differences > tolerance).mean())
    assert share <= flipped, f"{share:.2%} of pixel values differ by more than {tolerance}"


def require(name: str) -> None:
    """Skip (locally) or fail (CI=true) when a service the test needs is not running."""
    if service_up(name):
        return
    message = (
        f"{name} is not running on 127.0.0.1:{_PORTS[name]}"
        " (start it: `bash scripts/services.sh`; see README, Two commands)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI requires {message}")
    pytest.skip(message)


# --- logging --------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put the loggers back as they were after each test.

    `imagine-bot …` run in-process (bot.cli.main) and the trainer install stream handlers on
    the stream pytest captures for that one test; once it is closed, every later log record
    would print a "Logging error" traceback."""
    import logging

    loggers = [
        logging.getLogger(),
        *(logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)),
    ]
    saved = {logger: (logger.handlers[:], logger.level, logger.propagate) for logger in loggers}
    yield
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        if logger in saved:
            logger.handlers[:], logger.level, logger.propagate = saved[logger]
        elif isinstance(logger, logging.Logger):  # first imported during the test
            logger.handlers[:] = [h for h in logger.handlers if type(h) is not logging.StreamHandler]


# --- a Redis of a test's own -------------------------------------------------------------------


@pytest.fixture
def private_redis(tmp_path) -> Iterator[str]:
    """A redis-server of this test's own on a free port (its URL): a test may pause or cut it
    without touching the shared server."""
    import subprocess
    import time

    require("redis")  # where Redis runs, its server binary is installed
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    server.kill()
    server.wait()


# --- databases -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A migrated SQLite file, copied for each test (migrating per test would be slow)."""
    from engine.store.migrate import upgrade

    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session."""
    require("postgres")
    import psycopg

    from engine.store.migrate import upgrade

    name = f"imagine_test_{uuid.uuid4().hex[:10]}"
    admin = PG_ADMIN_URL.replace("postgresql://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = admin.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    yield url
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _truncate_postgres(url: str) -> None:
    import psycopg

    from engine.store.models import Base

    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


@pytest.fixture
def sqlite_url(sqlite_template, tmp_path) -> str:
    path = tmp_path / "imagine.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def postgres_url(postgres_database) -> str:
    _truncate_postgres(postgres_database)
    return postgres_database


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request) -> str:
    """The same test on SQLite and on PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
async def database(database_url):
    from engine.store.db import Database

    db = Database(database_url, pool_size=20, max_overflow=20)
    yield db
    await db.dispose()


# --- the service with a recording queue ------------------------------------------------------


class RecordingQueue:
    """A JobQueue that remembers what was enqueued (or fails like a broker that is down)."""

    def __init__(self) -> None:
        self.enqueued: list[int] = []
        self.down = False

    def enqueue(self, generation_id: int, task_id: str) -> None:
        if self.down:
            raise ConnectionRefusedError("broker unreachable")
        self.enqueued.append(generation_id)


@pytest.fixture
def queue() -> RecordingQueue:
    return RecordingQueue()


@pytest.fixture
def service(database, queue):
    from engine.service import ImagineService, ServicePolicy

    return ImagineService(database, queue, ServicePolicy(default_model="tiny-random", default_daily_images=100))


@pytest.fixture
def deliveries(database):
    """The delivery side's bookkeeping, on the same database as `service`."""
    from engine.service import Deliveries

    return Deliveries(database)


# --- the tiny real model ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from engine.render.tiny import build_tiny_unclip

    return build_tiny_unclip(tmp_path_factory.mktemp("models") / "tiny-random")


@pytest.fixture(scope="session")
def tiny_renderer(tiny_model_dir):
    """The tiny random unCLIP stack loaded through the real loader, once per session."""
    from engine.render.families.unclip import UnCLIPRenderer
    from engine.render.loader import resolve_model

    spec = resolve_model(str(tiny_model_dir), tiny_model_dir.parent)
    return UnCLIPRenderer.load(spec, device="cpu", dtype="float32")
