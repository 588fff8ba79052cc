"""Slash commands through the real discord.py client: defer first, then queue, progress, grid."""

from __future__ import annotations

from sqlalchemy import func, select

from engine.store.models import Generation
from tests.bot.discord.conftest import ALICE, CHANNEL_ID, GUILD, GUILD_ID, noisy_png
from tests.fakes.discord_model import option

NO_PINGS = {"parse": []}


async def generation_count(harness) -> int:
    return await harness.runtime.db.run(lambda s: s.scalar(select(func.count()).select_from(Generation)))


async def test_imagine_defers_before_any_database_work_then_shows_queue_progress_and_grid(harness):
    """/imagine: defer (before any row exists) → "queued" with ❌ → progress edits → 2×2 grid with
    U1–U4, V1–V4 and 🔄, recorded so reactions find it."""
    fake, gpu = harness.fake, harness.gpu
    gpu.hold()
    release_defer = fake.pause("POST", r"/interactions/\d+/[^/]+/callback")
    payload = await harness.slash("imagine", [option("prompt", "a red star"), option("seed", 7)])
    token = payload["token"]

    defer = await fake.wait_for("POST", rf"/interactions/{payload['id']}/{token}/callback", arrived=True)
    assert defer.body == {"type": 5}  # deferred, public, "thinking"
    assert fake.calls[-1] is defer  # nothing else was sent first
    assert await generation_count(harness) == 0  # and nothing was written before it
    release_defer.set()

    original = rf"/webhooks/\d+/{token}/messages/@original"
    queued = await fake.wait_for("PATCH", original)
    assert queued.body["content"] == '#1 imagine "a red star": queued, position 1 in the queue.'
    assert queued.custom_ids() == ["imagine:x:1"]
    assert queued.body["allowed_mentions"] == NO_PINGS

    mark = fake.mark()
    gpu.step(0.3)
    running = await fake.wait_for("PATCH", original, lambda r: "30%" in (r.content or ""), since=mark)
    assert "rendering" in running.content and running.custom_ids() == ["imagine:x:1"]
    gpu.step(0.7)
    await fake.wait_for("PATCH", original, lambda r: "70%" in (r.content or ""), since=mark)
    gpu.step(1.0)
    final = await fake.wait_for("PATCH", original, lambda r: bool(r.files), since=mark)

    assert final.files[0][0] == "imagine-1.png"
    assert final.custom_ids() == [
        "imagine:u:1:1",
        "imagine:u:1:2",
        "imagine:u:1:3",
        "imagine:u:1:4",
        "imagine:v:1:1",
        "imagine:v:1:2",
        "imagine:v:1:3",
        "imagine:v:1:4",
        "imagine:r:1",
    ]
    assert final.content.startswith('#1 imagine "a red star"\nseed 7 · model builtin · by alice')
    assert final.body["allowed_mentions"] == NO_PINGS
    message = fake.original(token)
    found = await harness.client.jobs.message_image(CHANNEL_ID, int(message["id"]))
    # A reaction on it finds the grid of job 1.
    assert (found.generation_id, found.image_index, found.role) == (1, None, "result")


async def test_a_5000_character_prompt_is_refused_at_once_and_nothing_is_queued(harness):
    """Discord does not enforce option lengths for bots: the bot refuses, privately, naming the
    limit, as its first and only response; no job is made and nothing is charged."""
    fake = harness.fake
    mark = fake.mark()
    payload = await harness.slash("imagine", [option("prompt", "x" * 5000)])
    refusal = await fake.wait_for("POST", rf"/interactions/{payload['id']}/{payload['token']}/callback", since=mark)
    assert refusal.body["type"] == 4
    assert refusal.body["data"]["flags"] == 64
    assert refusal.body["data"]["content"] == "Prompt is 5000 characters long; the limit is 1000."
    assert await generation_count(harness) == 0
    assert await harness.quota_used(ALICE) == 0


async def test_mention_injection_never_pings_anyone(harness):
    """A prompt full of @everyone, role and user mentions is shown escaped, and every message the
    bot sends or edits says `allowed_mentions: {"parse": []}`."""
    fake = harness.fake
    prompt = f"@everyone @here <@&{GUILD_ID}> <@{ALICE.id}> **loud**"
    token, grid = await harness.imagine(prompt)
    await harness.react(grid, "🔁")  # a notice naming the reactor
    await fake.wait_for("POST", rf"/channels/{CHANNEL_ID}/messages", since=0)
    escaped = f"@\u200beveryone @\u200bhere <@\u200b&{GUILD_ID}> <@\u200b{ALICE.id}> \\*\\*loud\\*\\*"
    assert escaped in grid["content"]
    assert "@everyone" not in grid["content"] and f"<@&{GUILD_ID}>" not in grid["content"]
    with_text = [r for r in fake.calls if r.content is not None]
    assert len(with_text) >= 3  # the "queued" edit, the grid, the notice
    for request in with_text:
        body = request.body.get("data", request.body) if request.path.endswith("/callback") else request.body
        assert body["allowed_mentions"]["parse"] == [], request


async def test_an_error_after_deferring_replaces_the_public_thinking_message_with_a_private_one(harness):
    """A refusal that needs the database (here: out of quota) deletes the public "thinking"
    message and tells only the user."""
    fake = harness.fake
    await harness.imagine("a red star", n=4)
    mark = fake.mark()
    payload = await harness.slash("imagine", [option("prompt", "more"), option("n", 4)], user=ALICE)
    for _ in range(9):  # 40 a day: 4 used, 9 × 4 more fit, the 10th does not
        await fake.wait_for("PATCH", rf"/webhooks/\d+/{payload['token']}/messages/@original", since=mark)
        mark = fake.mark()
        payload = await harness.slash("imagine", [option("prompt", "more"), option("n", 4)])
    deleted = await fake.wait_for("DELETE", rf"/webhooks/\d+/{payload['token']}/messages/@original", since=mark)
    followup = await fake.wait_for("POST", rf"/webhooks/\d+/{payload['token']}", since=mark)
    assert followup.at > deleted.at
    assert followup.body["flags"] == 64
    assert followup.body["content"].startswith("This needs 4 images of quota but you have 0 left;")


async def test_history_is_private_and_paged_with_buttons(harness):
    """/history shows 10 jobs a page, only to you; ▶ edits the same message to page 2."""
    fake = harness.fake
    for i in range(11):
        await harness.imagine(f"picture {i}", n=1)
    mark = fake.mark()
    payload = await harness.slash("history")
    defer = await fake.wait_for("POST", rf"/interactions/{payload['id']}/{payload['token']}/callback", since=mark)
    assert defer.body == {"type": 5, "data": {"flags": 64}}
    page_one = await fake.wait_for("PATCH", rf"/webhooks/\d+/{payload['token']}/messages/@original", since=mark)
    assert page_one.content.startswith("Your jobs (page 1 of 2, 11 in all):")
    assert page_one.custom_ids() == ["imagine:h:2"]

    message = fake.original(payload["token"])
    click = await harness.click(message, "imagine:h:2")
    update = await fake.wait_for("POST", rf"/interactions/{click['id']}/{click['token']}/callback", since=mark)
    assert update.body == {"type": 6}  # update the message the button is on
    page_two = await fake.wait_for("PATCH", rf"/webhooks/\d+/{click['token']}/messages/@original", since=mark)
    assert page_two.content.startswith("Your jobs (page 2 of 2, 11 in all):")
    assert page_two.custom_ids() == ["imagine:h:1"]


async def test_thread_shows_the_lineage_tree(harness):
    """/thread <job> prints the variation tree."""
    fake = harness.fake
    _token, grid = await harness.imagine("a red star")
    mark = fake.mark()
    await harness.click(grid, "imagine:v:1:2")
    await fake.wait_for("PATCH", rf"/channels/{grid['id']}/messages/\d+", lambda r: bool(r.files), since=mark)
    payload = await harness.slash("thread", [option("job", 2)])
    answer = await fake.wait_for("PATCH", rf"/webhooks/\d+/{payload['token']}/messages/@original", since=mark)
    assert answer.content == '#1 imagine "a red star" (4 images)\n└─ #2 variation of #1:2 (4 images)'


async def test_vary_an_uploaded_file_and_blend_by_reference_and_by_message_link(harness):
    """/vary with an attachment starts a new root from the file; /blend takes `1:1` and a link
    to a result message, and goes into the first image's thread."""
    fake = harness.fake
    upload = fake.upload("cat.png", noisy_png(64))
    mark = fake.mark()
    payload = await harness.slash(
        "vary",
        [option("upload", upload["id"], kind=11), option("n", 2)],
        resolved={"attachments": {upload["id"]: upload}},
    )
    await fake.wait_for(
        "PATCH", rf"/webhooks/\d+/{payload['token']}/messages/@original", lambda r: bool(r.files), since=mark
    )
    root = fake.original(payload["token"])
    assert root["content"].startswith("#1 variation")

    _token, grid = await harness.imagine("a blue ring", n=2)
    link = f"https://discord.com/channels/{GUILD_ID}/{CHANNEL_ID}/{grid['id']} 2"
    mark = fake.mark()
    payload = await harness.slash("blend", [option("first", "1:1"), option("second", link)])
    status = await fake.wait_for("POST", rf"/channels/{root['id']}/messages", since=mark)
    assert status.content == "#3 blend of #1:1 + #2:2: queued, position 1 in the queue."
    # (The no-op renderer stores no CLIP embeddings, so the worker cannot blend its images;
    # how the job ends is the engine's business, that the bot shows it is tested elsewhere.)


async def test_bad_options_are_refused_before_deferring(harness):
    """Values Discord's client would stop but a raw payload can carry are checked in code."""
    fake = harness.fake
    cases = [
        ("imagine", [option("prompt", "a star"), option("n", 9)], "--n must be between 1 and 4, got 9."),
        (
            "imagine",
            [option("prompt", "a star"), option("aspect", "5:1")],
            "--ar must be one of 1:1, 4:3, 3:4, 16:9, 9:16, 3:2, 2:3, got '5:1'.",
        ),
        (
            "vary",
            [],
            "Give either a file to upload or one of imagine-bot's images "
            "(12:3, last:2, or a link to its message), not both.",
        ),
        (
            "blend",
            [option("first", "1:1"), option("second", "banana")],
            "'banana' is not an image reference; use 12:3 (job 12, image 3), 12 (a one-image job) "
            "or last:3 (image 3 of your latest job).",
        ),
    ]
    for name, options, message in cases:
        mark = fake.mark()
        payload = await harness.slash(name, options)
        refusal = await fake.wait_for("POST", rf"/interactions/{payload['id']}/{payload['token']}/callback", since=mark)
        assert (refusal.body["type"], refusal.body["data"]["content"]) == (4, message)


async def test_image_autocomplete_offers_your_finished_images(harness):
    """Typing in /vary's image option offers your recent images by number and prompt."""
    fake = harness.fake
    await harness.imagine("a red star", n=2)
    mark = fake.mark()
    payload = fake.autocomplete(
        "vary", [{"name": "image", "type": 3, "value": "red", "focused": True}], user=ALICE, guild=GUILD
    )
    await harness.send(payload)
    answer = await fake.wait_for("POST", rf"/interactions/{payload['id']}/{payload['token']}/callback", since=mark)
    assert answer.body == {
        "type": 8,
        "data": {"choices": [{"name": "#1:1 a red star", "value": "1:1"}, {"name": "#1:2 a red star", "value": "1:2"}]},
    }


async def test_upscale_reroll_cancel_gallery_and_help_are_slash_commands(harness):
    """/upscale and /reroll start jobs like their buttons; /cancel, /gallery and /help answer
    privately — the commands Slack and the console had, now on Discord too."""
    fake = harness.fake
    _token, grid = await harness.imagine("a red star", n=2)

    async def private_answer(name, options=None):
        mark = fake.mark()
        payload = await harness.slash(name, options)
        return (
            await fake.wait_for("PATCH", rf"/webhooks/\d+/{payload['token']}/messages/@original", since=mark)
        ).content

    assert (await private_answer("upscale", [option("image", "1:2")])).startswith("#2 upscale of #1:2: queued")
    assert (await private_answer("reroll", [option("job", 1)])).startswith('#3 reroll "a red star": queued')
    harness.gpu.hold()
    mark = fake.mark()
    held = await harness.slash("imagine", [option("prompt", "a blue ring")])
    await fake.wait_for("PATCH", rf"/webhooks/\d+/{held['token']}/messages/@original", since=mark)
    assert (
        await private_answer("cancel", [option("job", 4)])
        == 'Cancelled #4 imagine "a blue ring"; the quota was refunded.'
    )
    assert "gallery" in (await private_answer("gallery")).lower()
    assert "/imagine <prompt>" in await private_answer("help")


async def test_retention_is_an_admin_command(harness):
    """/imagine-admin retention sets how long the server's jobs are kept (typed: days or keep)."""
    from tests.bot.discord.conftest import ADMIN
    from tests.bot.discord.test_moderation import admin
    from tests.fakes.discord_model import subcommand

    assert (
        await admin(harness, [subcommand("retention", [option("days", 30)])], user=ADMIN)
        == "Jobs and images older than 30 days will be deleted."
    )
    assert (
        await admin(harness, [subcommand("retention", [])], user=ADMIN)
        == "Give either a number of days or keep: forever/default."
    )
