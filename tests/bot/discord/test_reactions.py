"""Reactions on the bot's messages, fed as raw MESSAGE_REACTION_ADD payloads (no message cache)."""

from __future__ import annotations

from engine.domain.types import Actor, Platform
from tests.bot.discord.conftest import ADMIN, ALICE, BOB, CHANNEL_ID, GUILD, GUILD_ID

NO_PINGS = {"parse": []}


async def test_digit_on_a_grid_varies_that_image_in_the_thread_charged_to_the_reactor(harness):
    """3️⃣ on a grid: a variation of image 3, posted in the lineage's thread, charged to Bob."""
    fake = harness.fake
    _token, grid = await harness.imagine("a red star")
    mark = fake.mark()
    await harness.react(grid, "3\ufe0f\u20e3", user=BOB)
    status = await fake.wait_for("POST", rf"/channels/{grid['id']}/messages", since=mark)
    assert status.content == "#2 variation of #1:3: queued, position 1 in the queue."
    await fake.wait_for("PATCH", rf"/channels/{grid['id']}/messages/\d+", lambda r: bool(r.files), since=mark)
    assert await harness.quota_used(BOB) == 4


async def test_repeat_on_a_single_image_varies_it(harness):
    """🔁 on a one-image result varies that image."""
    fake = harness.fake
    _token, single = await harness.imagine("a lone tree", n=1)
    mark = fake.mark()
    await harness.react(single, "🔁")
    status = await fake.wait_for("POST", rf"/channels/{single['id']}/messages", since=mark)
    assert status.content == "#2 variation of #1:1: queued, position 1 in the queue."


async def test_repeat_on_a_grid_asks_which_image_without_pinging(harness):
    """🔁 on a grid cannot know which image: a notice says to use 1️⃣–4️⃣, naming the member
    without pinging them, and nothing is charged."""
    fake = harness.fake
    _token, grid = await harness.imagine("a red star")
    mark = fake.mark()
    await harness.react(grid, "🔁", user=BOB)
    notice = await fake.wait_for("POST", rf"/channels/{CHANNEL_ID}/messages", since=mark)
    assert notice.content == f"<@{BOB.id}> That is a grid: react 1️⃣–4️⃣ to say which image to vary."
    assert notice.body["allowed_mentions"] == {"parse": [], "replied_user": False}
    assert str(notice.body["message_reference"]["message_id"]) == grid["id"]
    assert await harness.quota_used(BOB) == 0


async def test_cross_by_the_requester_deletes_the_result(harness):
    """❌ by whoever asked for the job deletes its message."""
    fake = harness.fake
    _token, grid = await harness.imagine("a red star")
    mark = fake.mark()
    await harness.react(grid, "❌", user=ALICE)
    await fake.wait_for("DELETE", rf"/channels/{CHANNEL_ID}/messages/{grid['id']}", since=mark)
    assert int(grid["id"]) in fake.deleted


async def test_cross_by_someone_else_is_refused_but_a_moderator_may_and_is_audited(harness):
    """❌ by another member: refused with a notice; by a Manage Server member: deleted, audited."""
    fake = harness.fake
    _token, grid = await harness.imagine("a red star")
    mark = fake.mark()
    await harness.react(grid, "❌", user=BOB)
    notice = await fake.wait_for("POST", rf"/channels/{CHANNEL_ID}/messages", since=mark)
    assert "Only the person who asked for this job, or a moderator, can remove it." in notice.content
    assert int(grid["id"]) in fake.messages

    await harness.react(grid, "❌", user=ADMIN)
    await fake.wait_for("DELETE", rf"/channels/{CHANNEL_ID}/messages/{grid['id']}", since=mark)
    entries = await harness.runtime.service.audit_log(
        Actor(Platform.DISCORD, str(GUILD_ID), str(ADMIN.id), is_platform_admin=True)
    )
    assert [(e.action, e.target) for e in entries] == [("messages.remove", "job #1")]


async def test_cross_on_a_queued_job_cancels_it(harness):
    """❌ on a status message while the job waits cancels it (and refunds)."""
    fake, gpu = harness.fake, harness.gpu
    gpu.hold()
    mark = fake.mark()
    payload = await harness.slash("imagine", [{"name": "prompt", "type": 3, "value": "a slow cat"}])
    original = rf"/webhooks/\d+/{payload['token']}/messages/@original"
    await fake.wait_for("PATCH", original, since=mark)
    await harness.react(fake.original(payload["token"]), "❌")
    await fake.wait_for("PATCH", original, lambda r: "cancelled" in (r.content or ""), since=mark)
    assert await harness.quota_used(ALICE) == 0
    gpu.step(1.0)


async def test_envelope_sends_the_job_with_its_seed_and_parameters_to_dms(harness):
    """✉️ sends the grid, its prompt, seeds and parameters to the reactor's DMs, for free."""
    fake = harness.fake
    _token, grid = await harness.imagine("a red star", n=2)
    mark = fake.mark()
    await harness.react(grid, "✉️", user=BOB)
    opened = await fake.wait_for("POST", r"/users/@me/channels", since=mark)
    assert opened.body == {"recipient_id": BOB.id}
    dm = await fake.wait_for("POST", rf"/channels/{fake.dm_channels[BOB.id]}/messages", since=mark)
    assert dm.files[0][0] == "imagine-1.png"
    assert "prompt: a red star" in dm.content
    assert "parameters: aspect=1:1, n=2" in dm.content
    assert "image seeds: 1: " in dm.content
    assert dm.body["allowed_mentions"] == NO_PINGS
    assert await harness.quota_used(BOB) == 0


async def test_other_emoji_and_other_messages_are_ignored(harness):
    """A 👍, or a 🔁 on a message that is not the bot's, makes no request and charges nothing."""
    fake = harness.fake
    _token, grid = await harness.imagine("a red star")
    mark = fake.mark()
    await harness.react(grid, "👍", user=BOB)
    await harness.send(fake.reaction(12345, "🔁", user=BOB, guild=GUILD))
    await harness.react(grid, "✉️", user=BOB)  # a reaction that does act, to know the others were seen
    await fake.wait_for("POST", r"/channels/\d+/messages", since=mark)
    assert [r.path for r in fake.calls[mark:]] == [
        "/users/@me/channels",
        f"/channels/{fake.dm_channels[BOB.id]}/messages",
    ]


async def test_with_dm_reactions_a_repeat_on_the_dm_copy_varies_it_in_the_servers_thread(fake, gpu, settings):
    """IMAGINE_DISCORD_DM_REACTIONS: 🔁 on a copy ✉️ sent is charged to the reactor in the job's
    server, and the variation goes into the lineage's thread there."""
    from tests.bot.discord.conftest import discord_settings, running_bot

    async with running_bot(fake, gpu, settings, discord_settings(dm_reactions=True)) as harness:
        _token, single = await harness.imagine("a lone tree", n=1)
        mark = fake.mark()
        await harness.react(single, "✉️", user=BOB)
        await fake.wait_for("POST", r"/channels/\d+/messages", since=mark)
        copy = fake.channel_messages(fake.dm_channels[BOB.id])[0]
        await harness.recorded(copy)
        mark = fake.mark()
        await harness.send(fake.reaction(int(copy["id"]), "🔁", user=BOB, guild=None))
        status = await fake.wait_for("POST", rf"/channels/{single['id']}/messages", since=mark)
        assert status.content == "#2 variation of #1:1: queued, position 1 in the queue."
        assert await harness.quota_used(BOB) == 4
