"""Zoom Out and the pans under a single image on Slack, through the real bolt app and the fake
Slack: each is an edit job in the image's lineage and thread, charged to whoever pressed."""

from __future__ import annotations

import json

from bot.slack.app import SlackBot
from engine.domain.types import GenerationKind
from tests.bot.slack.conftest import ALICE, BOB, post_form
from tests.bot.slack.fake_slack import FakeSlack, block_action
from tests.bot.slack.test_app import actions_of, delivered, imagine

EDIT_BUTTONS = [
    "imagine:zoomout:1",
    "imagine:pan:1:left",
    "imagine:pan:1:right",
    "imagine:pan:1:up",
    "imagine:pan:1:down",
]


async def single_image(fake: FakeSlack, http, bot: SlackBot) -> str:
    """/imagine with one image (job #1); the ts of its result message (its buttons)."""
    return (await imagine(fake, http, bot, "a red star --n 1")).response["ts"]


async def press(fake: FakeSlack, http, bot: SlackBot, action_id: str, ts: str, *, user: str = BOB) -> dict:
    """Press a button of job #1's result message; returns the press's payload."""
    fields = block_action(action_id, "1", user=user, channel="C1", message_ts=ts, response_url=fake.response_url())
    assert (await post_form(http, bot, fields))[0] == 200
    return json.loads(fields["payload"])


async def used(bot: SlackBot, user: str) -> int:
    return (await bot.runtime.service.quota(await bot.adapter.directory.actor("T0FAKE", user))).used


async def test_a_single_image_has_the_edit_buttons_and_a_grid_has_not(bots, fake_slack, http):
    bot = await bots.start()
    grid = await imagine(fake_slack, http, bot, "a blue ring")
    assert not set(EDIT_BUTTONS) & set(actions_of(grid))
    single = await imagine(fake_slack, http, bot, "a red star --n 1")
    assert actions_of(single) == ["imagine:vary:1", "imagine:reroll", "imagine:upscale:1", *EDIT_BUTTONS]


async def test_zoom_out_is_an_edit_of_that_image_in_its_thread_charged_to_the_presser(bots, fake_slack, http):
    bot = await bots.start()
    ts = await single_image(fake_slack, http, bot)
    await press(fake_slack, http, bot, "imagine:zoomout:1", ts)
    result = await delivered(fake_slack, bot, 2)
    assert result.params["thread_ts"] == ts
    assert result.params["text"].startswith("#2 zoom-out ×2 of #1:1")
    job = await bot.runtime.deliveries.generation(2)
    assert (job.kind, job.parent_generation_id, job.parent_image_index) == (GenerationKind.EDIT, 1, 1)
    assert job.params["edit"] == {"op": "zoomout", "factor": 2.0}
    assert job.requester_external_id == BOB
    assert (await used(bot, BOB), await used(bot, ALICE)) == (4, 1)


async def test_each_pan_pans_its_own_way(bots, fake_slack, http):
    bot = await bots.start()
    ts = await single_image(fake_slack, http, bot)
    for job_id, direction in enumerate(("left", "right", "up", "down"), start=2):
        await press(fake_slack, http, bot, f"imagine:pan:1:{direction}", ts)
        result = await delivered(fake_slack, bot, job_id)
        assert result.params["text"].startswith(f"#{job_id} pan {direction} of #1:1")
        assert result.params["thread_ts"] == ts
        job = await bot.runtime.deliveries.generation(job_id)
        assert job.kind == GenerationKind.EDIT and job.parent_generation_id == 1
        assert job.params["edit"] == {"op": "pan", "direction": direction}
    assert await used(bot, BOB) == 16
