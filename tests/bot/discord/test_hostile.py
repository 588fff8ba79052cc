"""The Discord bot against hostile and careless input: raw option values the declaration does
not allow, ids past what the database holds, and the commands' registration itself."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from bot.replies import APOLOGY
from engine.store.models import Generation
from tests.bot.discord.conftest import ALICE, GUILD
from tests.fakes.discord_model import option, subcommand


@pytest.fixture(scope="module")
def discord_bot_for_fuzzing(tmp_path_factory, sqlite_template):
    """One real discord.py bot against the fake Discord, on an event loop of its own, for
    hypothesis to send many interactions to: (its harness, that loop)."""
    import threading

    from engine.worker import results as worker_results
    from tests.bot.discord.conftest import FakeDiscord, FakeGpu, discord_settings, make_settings, running_bot

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(worker_results, "PROGRESS_INTERVAL_S", 0.0)

        async def start():
            fake = await FakeDiscord([GUILD]).start()
            fake.install(patch)
            bot = running_bot(
                fake, FakeGpu(), make_settings(tmp_path_factory.mktemp("fuzz"), sqlite_template), discord_settings()
            )
            return fake, bot, await bot.__aenter__()

        fake, bot, harness = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
        yield harness, loop

        async def stop():
            await bot.__aexit__(None, None, None)
            await fake.stop()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(60)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


async def jobs(harness) -> int:
    return await harness.runtime.db.run(lambda s: s.scalar(select(func.count()).select_from(Generation)))


async def first_answer(harness, payload) -> dict:
    """The bot's first response to an interaction (its callback)."""
    return (await harness.fake.wait_for("POST", rf"/interactions/{payload['id']}/{payload['token']}/callback")).body


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("imagine", [option("prompt", "a star"), option("n", 2.5, kind=4)], "--n must be a whole number, got 2.5."),
        ("imagine", [option("prompt", "a star"), option("n", True, kind=4)], "--n must be a whole number, got True."),
        (
            "imagine",
            [option("prompt", "a star"), option("seed", 1.5, kind=4)],
            "--seed must be a whole number, got 1.5.",
        ),
        ("imagine", [option("prompt", 123, kind=3)], "--prompt must be text, got 123."),
        (
            "imagine",
            [option("prompt", "a star"), option("steps", "5", kind=4)],
            "--steps must be a whole number, got '5'.",
        ),
        (
            "imagine",
            [option("prompt", "a star"), option("guidance", float("nan"), kind=10)],
            "--guidance must be a number, got nan.",
        ),
        ("history", [option("page", 10**20)], "--page must be between 1 and 100000, got 100000000000000000000."),
        ("thread", [option("job", 10**12)], "--job must be between 1 and 2147483647, got 1000000000000."),
        (
            "vary",
            [option("image", "1:1"), option("strength", "a lot", kind=10)],
            "--strength must be a number, got 'a lot'.",
        ),
    ],
)
async def test_raw_option_values_the_declaration_does_not_allow_are_refused(harness, name, options, message):
    """A value of the wrong type or past the declared range — which Discord does not stop — is
    refused at once, privately, with what was wrong; nothing is queued or charged."""
    payload = await harness.slash(name, options)
    answer = await first_answer(harness, payload)
    assert (answer["type"], answer["data"]["content"], answer["data"]["flags"]) == (4, message, 64)
    assert await jobs(harness) == 0
    assert await harness.quota_used(ALICE) == 0


async def test_admin_options_are_checked_too(harness):
    """Subcommands' raw values are checked like top-level ones (a 2.5-image grant)."""
    payload = await harness.slash(
        "imagine-admin", [subcommand("quota", [subcommand("grant", [option("images", 2.5, kind=4)])], group=True)]
    )
    answer = await first_answer(harness, payload)
    assert answer["data"]["content"] == "--images must be a whole number, got 2.5."


@pytest.mark.parametrize("image", ["999999999999:1", "99999999999999999999999", "²:1", "١:1"])
async def test_image_references_past_the_database_or_in_other_digits_are_refused(harness, image):
    """A typed image reference naming a job no database row can have, or written in digits other
    than 0-9, is refused with what was wrong (not a database error, not the apology)."""
    payload = await harness.slash("vary", [option("image", image)])
    answer = await first_answer(harness, payload)
    assert answer["type"] == 4 and answer["data"]["flags"] == 64
    text = answer["data"]["content"]
    assert APOLOGY not in text
    assert ("There is no job #" in text) if image[0] == "9" else ("is not an image reference" in text)
    assert await jobs(harness) == 0


async def test_the_admin_group_is_guild_only_in_every_field(harness):
    """/imagine-admin is registered for servers only: no DM permission and only the guild
    context (it once said dm_permission true with contexts [0])."""
    registered = [c for scope in harness.fake.commands.values() for c in scope]
    admin = next(c for c in registered if c["name"] == "imagine-admin")
    assert admin.get("dm_permission") is False
    assert admin.get("contexts") == [0]
    for command in registered:
        if command.get("contexts") == [0]:
            assert command.get("dm_permission") is not True, command["name"]


_OPTION_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(prompt=_OPTION_VALUES, n=_OPTION_VALUES, seed=_OPTION_VALUES, page=_OPTION_VALUES)
def test_no_option_value_gets_the_apology_or_silence(discord_bot_for_fuzzing, prompt, n, seed, page):
    """Whatever JSON values the gateway delivers for /imagine and /history, the bot answers
    with something specific — never silence, never the generic apology."""
    harness, loop = discord_bot_for_fuzzing

    async def run(name, options):
        payload = await harness.slash(name, options)
        answer = await first_answer(harness, payload)
        if answer["type"] == 5:  # deferred: the real answer is the edit of the original
            edit = await harness.fake.wait_for("PATCH", rf"/webhooks/\d+/{payload['token']}/messages/@original")
            text = edit.body.get("content") or ""
        else:
            text = answer["data"]["content"]
        assert text and APOLOGY not in text

    kinds = {bool: 5, int: 4, float: 10, str: 3}
    imagine = [
        {"name": "prompt", "type": 3, "value": prompt},
        {"name": "n", "type": 4, "value": n},
        {"name": "seed", "type": kinds.get(type(seed), 4), "value": seed},
    ]
    history = [{"name": "page", "type": 4, "value": page}]
    for name, options in (("imagine", imagine), ("history", history)):
        asyncio.run_coroutine_threadsafe(run(name, options), loop).result(60)
