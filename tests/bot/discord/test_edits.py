"""Vary (Region), Zoom Out and the pans under a single image, through the real client and the
fake Discord: each is an edit job in the image's lineage and thread, charged to whoever pressed;
the form is answered from its custom_id alone, so it survives a restart; a bad form is refused
privately with nothing charged."""

from __future__ import annotations

from engine.domain.types import GenerationKind
from tests.bot.discord.conftest import (
    ALICE,
    BOB,
    GUILD,
    ThreadWorker,
    discord_settings,
    start_client,
    stop_client,
)
from tests.fakes.discord_model import custom_ids

EPHEMERAL = 64
SINGLE_IMAGE_BUTTONS = [
    "imagine:v:2:1",
    "imagine:e:2:1",
    "imagine:z:2:1",
    "imagine:p:2:1:l",
    "imagine:p:2:1:r",
    "imagine:p:2:1:u",
    "imagine:p:2:1:d",
]


async def upscaled(harness) -> dict:
    """/imagine, then U3: the single image (job #2) with its buttons, in the grid's thread."""
    fake = harness.fake
    _token, grid = await harness.imagine("a red star")
    mark = fake.mark()
    await harness.click(grid, "imagine:u:1:3")
    await fake.wait_for("PATCH", rf"/channels/{grid['id']}/messages/\d+", lambda r: bool(r.files), since=mark)
    return fake.channel_messages(int(grid["id"]))[-1]


async def edit_result(harness, since: int, thread_id: int):
    return await harness.fake.wait_for(
        "PATCH", rf"/channels/{thread_id}/messages/\d+", lambda r: bool(r.files), since=since
    )


async def test_a_single_image_has_vary_region_zoom_out_and_pan_buttons(harness):
    image = await upscaled(harness)
    rows = image["components"]
    assert custom_ids(rows) == SINGLE_IMAGE_BUTTONS  # an upscale: no 🔄
    assert [b.get("label") for b in rows[0]["components"]] == ["Vary", "Vary (Region)", "Zoom Out 2×"]
    assert [b["emoji"]["name"] for b in rows[1]["components"]] == ["⬅️", "➡️", "⬆️", "⬇️"]


async def test_zoom_out_button_is_an_edit_job_in_the_thread_charged_to_the_presser(harness):
    fake = harness.fake
    image = await upscaled(harness)
    thread_id = int(image["channel_id"])
    mark = fake.mark()
    click = await harness.click(image, "imagine:z:2:1", user=BOB)
    defer = await fake.wait_for("POST", rf"/interactions/{click['id']}/{click['token']}/callback", since=mark)
    assert defer.body == {"type": 5, "data": {"flags": EPHEMERAL}}
    status = await fake.wait_for("POST", rf"/channels/{thread_id}/messages", since=mark)
    assert status.content == "#3 zoom-out ×2 of #2:1: queued, position 1 in the queue."
    result = await edit_result(harness, mark, thread_id)
    assert "imagine:u:3:4" in result.custom_ids()
    job = await harness.runtime.deliveries.generation(3)
    assert (job.kind, job.parent_generation_id, job.parent_image_index) == (GenerationKind.EDIT, 2, 1)
    assert job.params["edit"] == {"op": "zoomout", "factor": 2.0}
    assert job.thread_root_id == 1
    assert await harness.quota_used(BOB) == 4


async def test_each_pan_button_pans_its_own_way(harness):
    fake = harness.fake
    image = await upscaled(harness)
    thread_id = int(image["channel_id"])
    for job_id, (letter, direction) in enumerate((("l", "left"), ("d", "down")), start=3):
        mark = fake.mark()
        await harness.click(image, f"imagine:p:2:1:{letter}")
        status = await fake.wait_for("POST", rf"/channels/{thread_id}/messages", since=mark)
        assert status.content == f"#{job_id} pan {direction} of #2:1: queued, position 1 in the queue."
        await edit_result(harness, mark, thread_id)
        assert (await harness.runtime.deliveries.generation(job_id)).params["edit"] == {
            "op": "pan",
            "direction": direction,
        }


async def test_vary_region_opens_a_form_and_its_answer_is_an_edit(harness):
    """🖌️: the answer to the press is the form (type 9, a menu of regions, a box, a prompt);
    sending it with `right` and a prompt starts an edit of that half, like /edit."""
    fake = harness.fake
    image = await upscaled(harness)
    thread_id = int(image["channel_id"])
    mark = fake.mark()
    click = await harness.click(image, "imagine:e:2:1", user=BOB)
    opened = await fake.wait_for("POST", rf"/interactions/{click['id']}/{click['token']}/callback", since=mark)
    assert opened.body["type"] == 9
    form = opened.body["data"]
    assert form["custom_id"] == "imagine:e:2:1"
    fields = {label["component"]["custom_id"]: label["component"] for label in form["components"]}
    assert [o["value"] for o in fields["region"]["options"]] == ["left", "right", "top", "bottom", "centre"]
    assert fields["prompt"]["required"] is True and fields["box"]["required"] is False

    sent = await harness.submit_form(click, {"region": ["right"], "box": "", "prompt": "a blue sky"}, user=BOB)
    status = await fake.wait_for("POST", rf"/channels/{thread_id}/messages", since=mark)
    assert status.content == '#3 edit of #2:1 "a blue sky": queued, position 1 in the queue.'
    await edit_result(harness, mark, thread_id)
    ack = fake.original(sent["token"])
    assert ack["flags"] & EPHEMERAL
    job = await harness.runtime.deliveries.generation(3)
    assert job.params["edit"] == {"op": "region", "box": [0.5, 0.0, 0.5, 1.0]}
    assert job.prompt == "a blue sky"
    assert await harness.quota_used(BOB) == 4


async def test_a_box_in_the_form_is_used_as_the_region(harness):
    fake = harness.fake
    image = await upscaled(harness)
    mark = fake.mark()
    click = await harness.click(image, "imagine:e:2:1")
    await fake.wait_for("POST", rf"/interactions/{click['id']}/{click['token']}/callback", since=mark)
    await harness.submit_form(click, {"box": "0,0,0.5,0.5", "prompt": "a sun"})
    await edit_result(harness, mark, int(image["channel_id"]))
    assert (await harness.runtime.deliveries.generation(3)).params["edit"]["box"] == [0.0, 0.0, 0.5, 0.5]


async def test_bad_forms_are_refused_privately_and_charge_nothing(harness):
    fake = harness.fake
    image = await upscaled(harness)
    used = await harness.quota_used(ALICE)
    cases = [
        ({"region": ["left"], "box": "0,0,0.5,0.5", "prompt": "a sun"}, "Give either a region"),
        ({"region": [], "box": "", "prompt": "a sun"}, "Give either a region"),
        ({"box": "0.9,0,0.5,1", "prompt": "a sun"}, "outside"),
        ({"box": "zero,0,1,1", "prompt": "a sun"}, "four numbers"),
        ({"region": ["left"], "prompt": "   "}, "what to draw"),
    ]
    for answers, expected in cases:
        mark = fake.mark()
        click = await harness.click(image, "imagine:e:2:1")
        await fake.wait_for("POST", rf"/interactions/{click['id']}/{click['token']}/callback", since=mark)
        sent = await harness.submit_form(click, answers)
        answer = await fake.wait_for("POST", rf"/interactions/{sent['id']}/{sent['token']}/callback", since=mark)
        if answer.body["type"] == 5:  # deferred first (the service refused): the answer follows
            answer = await fake.wait_for("PATCH", rf"/webhooks/\d+/{sent['token']}/messages/@original", since=mark)
            text = answer.content
        else:
            assert answer.body["data"]["flags"] & EPHEMERAL
            text = answer.body["data"]["content"]
        assert expected.lower() in text.lower(), (answers, text)
    assert await harness.quota_used(ALICE) == used
    assert fake.received("POST", rf"/channels/{image['channel_id']}/messages", since=mark) == []


async def test_a_form_opened_before_a_restart_is_answered_after_it(fake, gpu, settings):
    """The form's custom_id is all it needs: a bot process that never saw it opened answers it,
    and the new process's buttons on the old image work too."""
    worker = ThreadWorker(settings, gpu)
    from bot.runtime import build_bot_runtime
    from tests.bot.discord.conftest import Harness

    runtime = build_bot_runtime(settings, queue=worker)
    client = await start_client(fake, runtime, discord_settings())
    try:
        harness = Harness(fake, runtime, gpu, worker, client, discord_settings())
        image = await upscaled(harness)
        mark = fake.mark()
        click = await harness.click(image, "imagine:e:2:1")
        await fake.wait_for("POST", rf"/interactions/{click['id']}/{click['token']}/callback", since=mark)
    finally:
        await stop_client(client)
        await runtime.close()

    runtime = build_bot_runtime(settings, queue=worker)
    client = await start_client(fake, runtime, discord_settings())
    try:
        harness = Harness(fake, runtime, gpu, worker, client, discord_settings())
        mark = fake.mark()
        await harness.send(
            fake.submit_modal(click["token"], {"region": ["top"], "prompt": "a moon"}, user=ALICE, guild=GUILD)
        )
        await edit_result(harness, mark, int(image["channel_id"]))
        assert (await runtime.deliveries.generation(3)).params["edit"]["box"] == [0.0, 0.0, 1.0, 0.5]
        mark = fake.mark()
        await harness.click(image, "imagine:z:2:1")
        await edit_result(harness, mark, int(image["channel_id"]))
    finally:
        await stop_client(client)
        await runtime.close()
        worker.close()


async def test_vary_from_the_apps_menu_of_a_single_image(harness):
    """Apps → Vary on a single image's message: its variations, in its thread, charged to the
    user; on a grid it says to use V1–V4; on someone else's message that it is not ours."""
    fake = harness.fake
    image = await upscaled(harness)
    thread_id = int(image["channel_id"])
    mark = fake.mark()
    await harness.send(fake.message_command("Vary", int(image["id"]), user=BOB, guild=GUILD))
    status = await fake.wait_for("POST", rf"/channels/{thread_id}/messages", since=mark)
    assert status.content == "#3 variation of #2:1: queued, position 1 in the queue."
    await edit_result(harness, mark, thread_id)
    assert await harness.quota_used(BOB) == 4

    grid = fake.messages[thread_id]  # the thread was opened on the grid's message
    for message_id, expected in ((int(grid["id"]), "That is a grid"), (None, "not one of imagine-bot's images")):
        if message_id is None:
            message_id = int(fake.user_message(int(grid["channel_id"]), "hello", user=ALICE)["id"])
        mark = fake.mark()
        sent = await harness.send(fake.message_command("Vary", message_id, user=BOB, guild=GUILD))
        answer = await fake.wait_for("PATCH", rf"/webhooks/\d+/{sent['token']}/messages/@original", since=mark)
        assert expected in answer.content
    assert await harness.quota_used(BOB) == 4


async def test_an_image_option_that_does_not_parse_is_refused_by_name(harness):
    """The image option's transformer refuses text that names no image before the command runs."""
    fake = harness.fake
    mark = fake.mark()
    sent = await harness.slash("upscale", [{"name": "image", "type": 3, "value": "twelve"}])
    answer = await fake.wait_for("POST", rf"/interactions/{sent['id']}/{sent['token']}/callback", since=mark)
    assert answer.body["data"]["flags"] & EPHEMERAL
    assert "twelve" in answer.body["data"]["content"] and "sorry" not in answer.body["data"]["content"].lower()
