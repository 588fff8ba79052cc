"""The Discord bot for real, against a fake Discord, with the real core and the real worker code.

Only the edges are fake: Discord (tests/fakes/discord.py) and the GPU (`FakeGpu`:
the worker's own claim → render → store code runs around it, in a thread, with the no-op
renderer's images). The database is a real SQLite file (PostgreSQL where a test asks for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import queue
import random
import shutil
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.discord.client import ImagineClient
from bot.discord.config import DiscordSettings
from bot.runtime import BotRuntime, build_bot_runtime
from engine.config import Settings
from engine.image_files import ImageStore
from engine.images import encode_png
from engine.notify import LocalPublisher
from engine.render.noop import NoopRenderer
from engine.store.db import Database
from engine.worker import results as worker_results
from engine.worker.jobs import run_generation
from engine.worker.runtime import WorkerRuntime
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord_model import BASIC_PERMISSIONS, MANAGE_GUILD, FakeGuild, FakeUser, option

GUILD_ID = 900000000000000001
CHANNEL_ID = 900000000000000002
MOD_ROLE = 900000000000000003
ARTISTS_ROLE = 900000000000000004
ADMINS_ROLE = 900000000000000005
GUILD = FakeGuild(
    GUILD_ID,
    "Painters",
    owner_id=1,
    channel_id=CHANNEL_ID,
    roles={MOD_ROLE: ("mods", 0), ARTISTS_ROLE: ("artists", 0), ADMINS_ROLE: ("admins", MANAGE_GUILD)},
)
ALICE = FakeUser(800000000000000001, "alice")
BOB = FakeUser(800000000000000002, "bob", roles=(ARTISTS_ROLE,))
# Manage Server through a role: interactions carry it computed, reactions only carry the role.
ADMIN = FakeUser(800000000000000003, "admin", roles=(ADMINS_ROLE,), permissions=MANAGE_GUILD | BASIC_PERMISSIONS)
MOD = FakeUser(800000000000000004, "mod", roles=(MOD_ROLE,))


class FakeGpu:
    """The render step of a real worker, under the test's control.

    By default it renders at once (the no-op renderer's solid PNGs). `hold()` makes it wait for
    `step(fraction)` calls, each reported as progress, until `step(1.0)` lets it finish.
    `large_grid` replaces the grid with a noisy PNG of about 600 KB (for upload limits).
    """

    model_id = "noop"

    def __init__(self) -> None:
        self.steps: queue.Queue[float] | None = None
        self.large_grid = False

    def hold(self) -> None:
        self.steps = queue.Queue()

    def step(self, fraction: float) -> None:
        assert self.steps is not None, "call hold() first"
        self.steps.put(fraction)

    def render_batch(self, jobs, progress_fns):
        if self.steps is not None:
            while (fraction := self.steps.get(timeout=60)) < 1.0:
                for report in progress_fns:
                    report(fraction, "decoder")
        results = NoopRenderer().render_batch(jobs, progress_fns)
        if self.large_grid:
            results = [replace(r, grid_png=noisy_png(400)) if r and r.grid_png else r for r in results]
        return results


def noisy_png(size: int) -> bytes:
    rng = random.Random(size)
    image = Image.frombytes("RGB", (size, size), bytes(rng.getrandbits(8) for _ in range(size * size * 3)))
    return encode_png(image)


class ThreadWorker:
    """A JobQueue that runs the worker's own `run_generation` for each job, in one thread."""

    def __init__(self, settings: Settings, gpu: FakeGpu) -> None:
        self.runtime = WorkerRuntime(
            db=Database(settings.database_url, pool_size=2, max_overflow=2),
            store=ImageStore(settings.images_dir),
            publisher=LocalPublisher(),
            renderer_factory=lambda: gpu,
        )
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fake-gpu-worker")
        self.paused = False
        self.pending: list[int] = []

    def enqueue(self, generation_id: int, task_id: str) -> None:
        if self.paused:  # the worker is down: jobs wait in the "broker"
            self.pending.append(generation_id)
            return
        self.executor.submit(run_generation, self.runtime, generation_id)

    def resume(self) -> None:
        self.paused = False
        for generation_id in self.pending:
            self.executor.submit(run_generation, self.runtime, generation_id)
        self.pending.clear()

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.runtime.db.sync_engine.dispose()


def make_settings(tmp_path: Path, sqlite_template: Path, database_url: str | None = None) -> Settings:
    settings = Settings()
    settings.paths.data_dir = tmp_path / "data"
    settings.paths.data_dir.mkdir(parents=True, exist_ok=True)
    if database_url is None:
        db_file = settings.paths.data_dir / "imagine.db"
        shutil.copyfile(sqlite_template, db_file)
        database_url = f"sqlite:///{db_file}"
    settings.database.url = database_url
    settings.database.auto_migrate = False
    settings.quota.default_daily_images = 40
    return settings


def discord_settings(**overrides: Any) -> DiscordSettings:
    values = {
        "token": "fake-token",
        "sync_commands": True,
        "progress_interval_s": 0.0,
        "sweep_interval_s": 0.5,
        "delivery_lease_s": 1.0,
        "notice_ttl_s": 60.0,
    }
    return DiscordSettings(**{**values, **overrides})


@dataclass
class Harness:
    """A running bot, its fake Discord, its database and its fake GPU, with shortcuts."""

    fake: FakeDiscord
    runtime: BotRuntime
    gpu: FakeGpu
    worker: ThreadWorker
    client: ImagineClient
    settings: DiscordSettings

    async def send(self, payload: dict[str, Any]) -> dict[str, Any]:
        event = "INTERACTION_CREATE" if "token" in payload else "MESSAGE_REACTION_ADD"
        await self.fake.dispatch(event, payload)
        return payload

    async def slash(
        self, name: str, options: list[dict[str, Any]] | None = None, *, user: FakeUser = ALICE, **kwargs: Any
    ) -> dict[str, Any]:
        return await self.send(self.fake.slash_command(name, options, user=user, guild=GUILD, **kwargs))

    async def imagine(
        self, prompt: str, *, user: FakeUser = ALICE, n: int | None = None, **kwargs: Any
    ) -> tuple[str, dict[str, Any]]:
        """Run /imagine and wait for its grid; returns (token, the result message)."""
        options = [option("prompt", prompt)] + ([option("n", n)] if n else [])
        mark = self.fake.mark()
        payload = await self.slash("imagine", options, user=user, **kwargs)
        token = payload["token"]
        await self.fake.wait_for(
            "PATCH", rf"/webhooks/\d+/{token}/messages/@original", lambda r: bool(r.files), since=mark
        )
        return token, self.fake.original(token)

    async def click(
        self, message: dict[str, Any], custom_id: str, *, user: FakeUser = ALICE, **kwargs: Any
    ) -> dict[str, Any]:
        return await self.send(self.fake.click(int(message["id"]), custom_id, user=user, guild=GUILD, **kwargs))

    async def submit_form(
        self, opened_by: dict[str, Any], answers: dict[str, str | list[str]], *, user: FakeUser = ALICE
    ) -> dict[str, Any]:
        return await self.send(self.fake.submit_modal(opened_by["token"], answers, user=user, guild=GUILD))

    async def react(self, message: dict[str, Any], emoji: str, *, user: FakeUser = ALICE) -> dict[str, Any]:
        return await self.send(self.fake.reaction(int(message["id"]), emoji, user=user, guild=GUILD))

    async def recorded(self, message: dict[str, Any], timeout: float = 10.0) -> None:
        """Wait until the bot has recorded a message it posted (it does so right after Discord
        answers the post, and nothing it sends marks that moment)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while await self.client.jobs.message_image(int(message["channel_id"]), int(message["id"])) is None:
            assert asyncio.get_running_loop().time() < deadline, f"message {message['id']} never recorded"
            await asyncio.sleep(0.01)

    async def quota_used(self, user: FakeUser) -> int:
        from engine.domain.types import Actor, Platform

        status = await self.runtime.service.quota(Actor(Platform.DISCORD, str(GUILD_ID), str(user.id)))
        return status.used


async def start_client(fake: FakeDiscord, runtime: BotRuntime, settings: DiscordSettings) -> ImagineClient:
    client = ImagineClient(runtime, settings, guild_ready_timeout=0.05)
    client._test_task = asyncio.create_task(client.start("fake-token"))  # type: ignore[attr-defined]
    ready = asyncio.create_task(client.wait_until_ready())
    done, _ = await asyncio.wait(
        {ready, client._test_task},
        timeout=20,  # type: ignore[attr-defined]
        return_when=asyncio.FIRST_COMPLETED,
    )
    if ready not in done:
        ready.cancel()
        if client._test_task.done():  # type: ignore[attr-defined]
            client._test_task.result()  # type: ignore[attr-defined]
        raise AssertionError("the bot did not become ready")
    return client


async def stop_client(client: ImagineClient) -> None:
    await client.close()
    task = client._test_task  # type: ignore[attr-defined]
    # A closed client may end its task with an error; it is gone.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def fake(monkeypatch) -> AsyncIterator[FakeDiscord]:
    server = await FakeDiscord([GUILD]).start()
    server.install(monkeypatch)
    yield server
    await server.stop()


@pytest.fixture
def gpu(monkeypatch) -> FakeGpu:
    # Every progress step a test takes is written to the row (no 0.5 s throttle in tests).
    monkeypatch.setattr(worker_results, "PROGRESS_INTERVAL_S", 0.0)
    return FakeGpu()


@pytest.fixture
def settings(tmp_path, sqlite_template) -> Settings:
    return make_settings(tmp_path, sqlite_template)


@pytest.fixture
async def harness(fake, gpu, settings) -> AsyncIterator[Harness]:
    async with running_bot(fake, gpu, settings, discord_settings()) as h:
        yield h


class running_bot:
    """`async with running_bot(...) as harness`: a bot with its worker, stopped cleanly after."""

    def __init__(self, fake: FakeDiscord, gpu: FakeGpu, settings: Settings, bot_settings: DiscordSettings) -> None:
        self.fake, self.gpu, self.settings, self.bot_settings = fake, gpu, settings, bot_settings

    async def __aenter__(self) -> Harness:
        self.worker = ThreadWorker(self.settings, self.gpu)
        self.runtime = build_bot_runtime(self.settings, queue=self.worker)
        client = await start_client(self.fake, self.runtime, self.bot_settings)
        self.harness = Harness(self.fake, self.runtime, self.gpu, self.worker, client, self.bot_settings)
        return self.harness

    async def __aexit__(self, *exc: Any) -> None:
        await stop_client(self.harness.client)
        if self.gpu.steps is not None:
            for _ in range(20):  # let held renders finish so the worker thread can stop
                self.gpu.steps.put(1.0)
        await asyncio.to_thread(self.worker.close)
        await self.runtime.close()


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size
