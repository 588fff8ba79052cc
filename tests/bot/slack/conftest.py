"""Fixtures for the Slack adapter: a fake Slack, and real Slack bots (bolt AsyncApp served by
aiohttp on 127.0.0.1) over the real service, the embedded Celery broker and the no-op renderer."""

from __future__ import annotations

import asyncio
import json
import shutil

import aiohttp
import pytest

from bot.runtime import build_bot_runtime
from bot.slack.app import SlackBot
from bot.slack.config import SlackSettings
from engine.config import Settings
from engine.worker.embedded import EmbeddedWorker
from tests.fakes.slack import BOT_TOKEN, FakeSlack
from tests.fakes.slack_requests import SIGNING_SECRET, form_body, sign

ALICE, BOB, ADA, MOD = "UALICE", "UBOB", "UADA", "UMOD"


@pytest.fixture
async def fake_slack():
    fake = await FakeSlack().start()
    fake.add_user(ALICE, "Alice")
    fake.add_user(BOB, "Bob")
    fake.add_user(ADA, "Ada", admin=True)
    fake.add_user(MOD, "Moe")
    fake.add_usergroup("SMODS", [MOD])
    yield fake
    await fake.stop()


def slack_settings(fake: FakeSlack, **overrides) -> SlackSettings:
    values = dict(
        bot_token=BOT_TOKEN,
        signing_secret=SIGNING_SECRET,
        api_url=fake.api_url,
        app_token=fake.app_token,
        host="127.0.0.1",
        port=0,
        delivery_sweep_s=0.5,
        delivery_lease_s=1.0,
        directory_cache_s=60.0,
    )
    values.update(overrides)
    return SlackSettings(**values)


def bot_settings(tmp_path, sqlite_template, database_url: str | None = None) -> Settings:
    settings = Settings()
    settings.paths.data_dir = tmp_path / "data"
    settings.paths.data_dir.mkdir(parents=True, exist_ok=True)
    if database_url is None:
        db_file = settings.paths.data_dir / "imagine.db"
        shutil.copyfile(sqlite_template, db_file)
        database_url = f"sqlite:///{db_file}"
    settings.database.url = database_url
    settings.database.auto_migrate = False
    settings.broker.url = ""  # the embedded SQLite broker: no server needed
    settings.broker.poll_interval_s = 0.05
    settings.render.backend = "noop"  # 8x8 images at once: these tests are about Slack
    return settings


class Bots:
    """Starts Slack bot replicas (and one embedded worker) and stops them all afterwards."""

    def __init__(self, tmp_path, sqlite_template, fake: FakeSlack) -> None:
        self.tmp_path = tmp_path
        self.sqlite_template = sqlite_template
        self.fake = fake
        self.started: list[tuple[SlackBot, object]] = []
        self.workers: list[EmbeddedWorker] = []

    async def start(
        self,
        *,
        worker: bool = True,
        database_url: str | None = None,
        settings: Settings | None = None,
        **slack_overrides,
    ) -> SlackBot:
        settings = settings or bot_settings(self.tmp_path, self.sqlite_template, database_url)
        runtime = build_bot_runtime(settings)
        if worker:
            embedded = EmbeddedWorker(runtime.celery_app)
            await asyncio.to_thread(embedded.start)
            self.workers.append(embedded)
        bot = SlackBot(runtime, slack_settings(self.fake, **slack_overrides))
        await bot.start()
        self.started.append((bot, runtime))
        return bot

    async def stop(self) -> None:
        for bot, runtime in reversed(self.started):
            await bot.stop()
            await runtime.close()
        for worker in self.workers:
            await asyncio.to_thread(worker.stop)


@pytest.fixture
async def bots(tmp_path, sqlite_template, fake_slack):
    started = Bots(tmp_path, sqlite_template, fake_slack)
    yield started
    await started.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def events_url(bot: SlackBot | str) -> str:
    """Where a bot takes Slack's requests (a URL string is taken as it is)."""
    return bot if isinstance(bot, str) else f"http://127.0.0.1:{bot.port}{bot.settings.path}"


async def post_form(
    http: aiohttp.ClientSession,
    bot: SlackBot | str,
    fields: dict[str, str],
    *,
    headers: dict[str, str] | None = None,
    signature: dict[str, str] | None = None,
):
    """POST a form body to the bot the way Slack does (signed); returns (status, body text)."""
    body = form_body(fields)
    all_headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        **(signature if signature is not None else sign(body)),
        **(headers or {}),
    }
    async with http.post(events_url(bot), data=body, headers=all_headers) as response:
        return response.status, await response.text()


async def post_json(
    http: aiohttp.ClientSession, bot: SlackBot | str, payload: dict, *, headers: dict[str, str] | None = None
):
    """POST an Events API body to the bot, signed; returns (status, body text)."""
    body = json.dumps(payload)
    all_headers = {"Content-Type": "application/json", **sign(body), **(headers or {})}
    async with http.post(events_url(bot), data=body, headers=all_headers) as response:
        return response.status, await response.text()
