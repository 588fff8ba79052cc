"""Vary (Region), Zoom Out and the pans under a single image on Slack, through the real bolt app
and the fake Slack: each is an edit job in the image's lineage and thread, charged to whoever
pressed; the form is opened with the press's trigger_id and answered from the submitted view
alone (after a restart too); a bad form is refused in the form, with nothing charged."""

from __future__ import annotations

import asyncio
import json

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.app import SlackBot
from bot.slack.forms import region_form
from engine.domain.edits import REGION_NAMES
from engine.domain.types import GenerationKind
from tests.bot.slack.conftest import ALICE, BOB, post_form
from tests.bot.slack.test_app import actions_of, count_jobs, delivered, imagine
from tests.fakes.slack import BOT_TOKEN, FakeSlack
from tests.fakes.slack_requests import block_action, form_body, sign, view_submission

EDIT_BUTTONS = [
    "imagine:region:1",
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


async def open_form(fake: FakeSlack, http, bot: SlackBot, ts: str, *, user: str = BOB) -> dict:
    """Press Vary (Region) on job #1's image; the modal views.open opened."""
    pressed = await press(fake, http, bot, "imagine:region:1", ts, user=user)
    await fake.wait_for("views.open", where=lambda c: c.params.get("trigger_id") == pressed["trigger_id"])
    return fake.views[-1]


async def submit(http, bot: SlackBot, view: dict, answers: dict, *, user: str = BOB, **options) -> tuple[int, str]:
    return await post_form(http, bot, view_submission(view, answers, user=user, **options))


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


async def test_vary_region_opens_the_form_and_a_region_in_it_is_an_edit(bots, fake_slack, http):
    """The press's trigger_id opens the form (a menu of regions and a box, both optional, and a
    prompt); sending it with `right` closes it and starts an edit of that half, as the sender."""
    bot = await bots.start()
    ts = await single_image(fake_slack, http, bot)
    pressed = await press(fake_slack, http, bot, "imagine:region:1", ts)
    opened = await fake_slack.wait_for("views.open")
    assert opened.params["trigger_id"] == pressed["trigger_id"] and opened.response["ok"] is True
    view = fake_slack.views[-1]
    assert view["callback_id"] == "imagine:region:1:1"
    assert json.loads(view["private_metadata"]) == {"channel": "C1"}
    inputs = {block["block_id"]: block for block in view["blocks"] if block["type"] == "input"}
    assert [o["value"] for o in inputs["region"]["element"]["options"]] == list(REGION_NAMES)
    assert (inputs["region"]["optional"], inputs["box"]["optional"], inputs["prompt"]["optional"]) == (
        True,
        True,
        False,
    )
    assert await count_jobs(bot) == 1  # opening the form charges nothing

    assert await submit(http, bot, view, {"region": "right", "prompt": "a blue sky"}) == (200, "")
    result = await delivered(fake_slack, bot, 2)
    assert result.params["thread_ts"] == ts
    job = await bot.runtime.deliveries.generation(2)
    assert (job.kind, job.parent_generation_id, job.parent_image_index) == (GenerationKind.EDIT, 1, 1)
    assert job.params["edit"] == {"op": "region", "box": [0.5, 0.0, 0.5, 1.0]}
    assert job.prompt == "a blue sky" and job.requester_external_id == BOB
    assert await used(bot, BOB) == 4


async def test_a_box_in_the_form_is_the_region(bots, fake_slack, http):
    bot = await bots.start()
    view = await open_form(fake_slack, http, bot, await single_image(fake_slack, http, bot))
    assert (await submit(http, bot, view, {"box": " 0,0,0.5,0.5 ", "prompt": "a sun"}))[0] == 200
    await delivered(fake_slack, bot, 2)
    assert (await bot.runtime.deliveries.generation(2)).params["edit"]["box"] == [0.0, 0.0, 0.5, 0.5]


@pytest.mark.parametrize(
    ("answers", "block", "says"),
    [
        ({"region": "left", "box": "0,0,0.5,0.5", "prompt": "a sun"}, "region", "not both"),
        ({"prompt": "a sun"}, "region", "either a region"),
        ({"box": "2,0,1,1", "prompt": "a sun"}, "box", "outside the image"),
        ({"box": "zero,0,1,1", "prompt": "a sun"}, "box", "four numbers"),
        ({"box": "junk", "prompt": "a sun"}, "box", "X,Y,W,H"),
        ({"box": "0,0,0.01,0.5", "prompt": "a sun"}, "box", "too thin"),
        ({"region": "left", "prompt": "   "}, "prompt", "what to draw"),
    ],
)
async def test_a_bad_form_is_refused_in_the_form_and_charges_nothing(bots, fake_slack, http, answers, block, says):
    """Slack's way to refuse a form: `response_action: errors`, the message under the field that
    is wrong; the form stays open, no job is made."""
    bot = await bots.start(worker=False)
    view = await open_form(fake_slack, http, bot, await single_image_without_worker(fake_slack, http, bot))
    status, body = await submit(http, bot, view, answers)
    assert status == 200
    answer = json.loads(body)
    assert answer["response_action"] == "errors" and list(answer["errors"]) == [block]
    assert says.lower() in answer["errors"][block].lower()
    await asyncio.sleep(0.3)  # what a lazy listener would have done by now
    assert await count_jobs(bot) == 0 and await used(bot, BOB) == 0


async def single_image_without_worker(fake: FakeSlack, http, bot: SlackBot) -> str:
    """A result message of job #1 as delivered (posted by hand: no worker renders here)."""
    from bot.slack.blocks import edit_blocks

    message = fake.add_message("C1", "UBOT", "#1 imagine")
    message.blocks = edit_blocks(1)
    return message.ts


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"private_metadata": "not json"}, "press Vary (Region)"),
        ({"private_metadata": json.dumps({"channel": "<!here>"})}, "press Vary (Region)"),
        ({"callback_id": "imagine:region:99999999999:1"}, "no job #99999999999"),
    ],
)
async def test_a_forged_form_is_refused_in_the_form(bots, fake_slack, http, change, says):
    bot = await bots.start(worker=False)
    view = await open_form(fake_slack, http, bot, await single_image_without_worker(fake_slack, http, bot))
    status, body = await submit(http, bot, {**view, **change}, {"region": "left", "prompt": "a sun"})
    assert status == 200 and says in json.loads(body)["errors"]["prompt"]
    await asyncio.sleep(0.3)
    assert await count_jobs(bot) == 0


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"region": "left", "prompt": "a sun"},
        {"region": {"region": {"selected_option": "left"}}, "box": {"box": {"value": 5}}, "prompt": {"prompt": {}}},
        {"region": {"region": {"selected_option": {"value": "everywhere"}}}, "prompt": {"prompt": {"value": "a sun"}}},
    ],
)
async def test_garbled_answers_are_refused_in_the_form(bots, fake_slack, http, values):
    """State values no Slack client sends (a signed request can still carry them) are read as
    no answer, or a region the menu does not offer: refused under the menu, never a 500."""
    bot = await bots.start(worker=False)
    view = await open_form(fake_slack, http, bot, await single_image_without_worker(fake_slack, http, bot))
    status, body = await submit(http, bot, view, {}, values=values)
    assert status == 200 and list(json.loads(body)["errors"]) == ["region"]
    await asyncio.sleep(0.3)
    assert await count_jobs(bot) == 0


async def test_a_form_for_a_job_that_does_not_exist_is_refused_privately(bots, fake_slack, http):
    """The form closes (nothing about it can be fixed in it) and the sender is told in the channel."""
    bot = await bots.start()
    view = await open_form(fake_slack, http, bot, await single_image(fake_slack, http, bot))
    forged = {**view, "callback_id": "imagine:region:99:1"}
    assert await submit(http, bot, forged, {"region": "left", "prompt": "a sun"}) == (200, "")
    told = await fake_slack.wait_for("chat.postEphemeral")
    assert (told.params["channel"], told.params["user"]) == ("C1", BOB)
    assert "There is no job #99" in told.params["text"]
    assert await count_jobs(bot) == 1 and await used(bot, BOB) == 0


async def test_a_form_sent_twice_makes_one_job(bots, fake_slack, http):
    """A signed submission replayed is dropped like any other repeat (the delivery id)."""
    bot = await bots.start()
    view = await open_form(fake_slack, http, bot, await single_image(fake_slack, http, bot))
    fields = view_submission(view, {"region": "top", "prompt": "a moon"}, user=BOB)
    signature = sign(form_body(fields))
    for _ in range(3):
        assert (await post_form(http, bot, fields, signature=signature))[0] == 200
    await delivered(fake_slack, bot, 2)
    await asyncio.sleep(0.5)
    assert await count_jobs(bot) == 2 and await used(bot, BOB) == 4


async def test_a_form_opened_before_a_restart_is_answered_after_it(tmp_path, bots, fake_slack, http):
    """A new bot (a new app, a new adapter) that never saw the form opened answers it from the
    submitted view alone; the old image's buttons work on it too."""
    from tests.bot.slack.conftest import bot_settings

    settings = bot_settings(tmp_path, bots.sqlite_template)
    before = await bots.start(settings=settings)
    ts = await single_image(fake_slack, http, before)
    view = await open_form(fake_slack, http, before, ts)
    await before.stop()

    after = await bots.start(settings=settings, worker=False)  # the first bot's worker still renders
    assert (await submit(http, after, view, {"region": "bottom", "prompt": "the sea"}))[0] == 200
    await delivered(fake_slack, after, 2)
    assert (await after.runtime.deliveries.generation(2)).params["edit"]["box"] == [0.0, 0.5, 1.0, 0.5]
    await press(fake_slack, http, after, "imagine:zoomout:1", ts)
    await delivered(fake_slack, after, 3)


async def test_a_form_that_cannot_be_opened_in_time_says_so(bots, fake_slack, http):
    bot = await bots.start(worker=False)
    ts = await single_image_without_worker(fake_slack, http, bot)
    fake_slack.fail("views.open", status=200, error="expired_trigger_id")
    await press(fake_slack, http, bot, "imagine:region:1", ts)
    told = await fake_slack.wait_for("response_url")
    assert told.params["text"] == "The form could not be opened in time; press Vary (Region) again."
    assert told.params["response_type"] == "ephemeral" and told.params["replace_original"] is False


async def test_the_fake_opens_only_valid_modals_once_per_trigger(fake_slack):
    """views.open as Slack answers it: a trigger_id is required and used once; a modal's title
    is at most 24 characters; input blocks need a submit button."""
    client = AsyncWebClient(token=BOT_TOKEN, base_url=fake_slack.api_url)
    form = region_form(12, 1, "C1", max_prompt_chars=1000)
    assert (await client.views_open(trigger_id="t1", view=form))["view"]["callback_id"] == "imagine:region:12:1"
    bad = [
        ("t1", form, "exchanged_trigger_id"),
        (None, form, "invalid_arguments"),
        ("t2", {**form, "title": {"type": "plain_text", "text": "x" * 25}}, "invalid_arguments"),
        ("t3", {key: value for key, value in form.items() if key != "submit"}, "invalid_arguments"),
        ("t4", {**form, "type": "home"}, "invalid_arguments"),
        ("t5", {**form, "blocks": form["blocks"] * 34}, "invalid_arguments"),
    ]
    for trigger, view, error in bad:
        with pytest.raises(SlackApiError) as refused:
            await client.views_open(trigger_id=trigger, view=view)
        assert refused.value.response["error"] == error
    assert len(fake_slack.views) == 1
