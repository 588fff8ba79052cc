"""Any text a user can type, through the shared parser and the command runner against the real
service: a reply saying what happened or what was wrong — never the generic apology, never an
exception (a console script, a Slack command and a Discord option all go this way)."""

from __future__ import annotations

import asyncio
import shutil
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.commands import parse_command
from bot.runner import CommandRunner
from engine.domain.errors import UsageError
from engine.domain.types import Actor, Platform
from tests.conftest import RecordingQueue

APOLOGY = "Sorry, something went wrong"
USER = Actor(Platform.CONSOLE, "team-1", "fuzz", "Fuzz", is_platform_admin=True)

_WORDS = st.sampled_from(
    [
        "/imagine",
        "/vary",
        "/blend",
        "/upscale",
        "/reroll",
        "/cancel",
        "/history",
        "/thread",
        "/quota",
        "/help",
        "/gallery",
        "/imagine-admin",
        "quota",
        "set",
        "grant",
        "reset",
        "ban",
        "unban",
        "block-term",
        "unblock-term",
        "audit",
        "stats",
        "retention",
        "mod-role",
        "add",
        "remove",
        "--seed",
        "--n",
        "--ar",
        "--no",
        "--steps",
        "--guidance",
        "--strength",
        "--weights",
        "--strip",
        "--toward",
        "--amount",
        "last:2",
        "1:1",
        "1",
        "0",
        "-1",
        "²",
        "٣",
        "99999999999999999999",
        "2147483648",
        "1e3",
        "nan",
        "inf",
        "@bob",
        "@&mods",
        "team",
        "<@U1>",
        "<!everyone>",
        "a",
        "red",
        "star",
        "\u200b",
        "\u202e",
        "\x00",
        "—n",
        "16:9",
    ]
)
_LINES = st.one_of(
    st.lists(_WORDS, min_size=1, max_size=8).map(" ".join),
    st.text(max_size=120).map(lambda t: "/imagine " + t),
    st.text(max_size=60),
)


@pytest.fixture(scope="module")
def runner_on_its_own_loop(tmp_path_factory, sqlite_template):
    from engine.service import ImagineService, ServicePolicy
    from engine.store.db import Database

    path = tmp_path_factory.mktemp("fuzz") / "imagine.db"
    shutil.copyfile(sqlite_template, path)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    db = Database(f"sqlite:///{path}")
    service = ImagineService(db, RecordingQueue(), ServicePolicy(default_model="tiny-random"))
    yield CommandRunner(service), loop
    asyncio.run_coroutine_threadsafe(db.dispose(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(line=_LINES)
def test_no_text_gets_the_apology(runner_on_its_own_loop, line):
    """Parsed, then run: a UsageError with a message, or a reply that is not the apology."""
    runner, loop = runner_on_its_own_loop
    try:
        command = parse_command(line)
    except UsageError as error:
        assert error.message
        return
    reply = asyncio.run_coroutine_threadsafe(runner.run(USER, command), loop).result(30)
    assert reply.text and APOLOGY not in reply.text, (line, reply.text)
