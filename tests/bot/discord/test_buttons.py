"""Grid buttons (DynamicItems): variations open the lineage's thread, everything is charged to
whoever pressed, and the answer to the press is only theirs."""

from __future__ import annotations

from tests.bot.discord.conftest import ALICE, BOB, CHANNEL_ID, GUILD_ID

NO_PINGS = {"parse": []}
EPHEMERAL = 64


async def test_variation_button_opens_a_thread_on_the_root_and_links_the_parent(harness):
    """V2 on a grid: a thread opens on the grid's message; the variation's status message is posted
    there and edited into the result, which links to its parent; the press is charged to Bob."""
    fake = harness.fake
    _token, grid = await harness.imagine("a red star")
    mark = fake.mark()
    click = await harness.click(grid, "imagine:v:1:2", user=BOB)

    defer = await fake.wait_for("POST", rf"/interactions/{click['id']}/{click['token']}/callback", since=mark)
    assert defer.body == {"type": 5, "data": {"flags": EPHEMERAL}}
    opened = await fake.wait_for("POST", rf"/channels/{CHANNEL_ID}/messages/{grid['id']}/threads", since=mark)
    assert opened.body["name"] == "#1 a red star"
    thread_id = int(grid["id"])  # a thread started from a message has the message's id
    status = await fake.wait_for("POST", rf"/channels/{thread_id}/messages", since=mark)
    assert status.content == "#2 variation of #1:2: queued, position 1 in the queue."
    assert status.body["allowed_mentions"] == NO_PINGS
    status_message = fake.channel_messages(thread_id)[0]

    result = await fake.wait_for(
        "PATCH", rf"/channels/{thread_id}/messages/{status_message['id']}", lambda r: bool(r.files), since=mark
    )
    link = f"https://discord.com/channels/{GUILD_ID}/{CHANNEL_ID}/{grid['id']}"
    assert f"from #1:2: {link}" in result.content
    assert "imagine:v:2:4" in result.custom_ids()
    ack = await fake.wait_for(
        "PATCH",
        rf"/webhooks/\d+/{click['token']}/messages/@original",
        lambda r: "done" in (r.content or ""),
        since=mark,
    )
    assert f"https://discord.com/channels/{GUILD_ID}/{thread_id}/{status_message['id']}" in ack.content
    assert await harness.quota_used(BOB) == 4
    assert await harness.quota_used(ALICE) == 4


async def test_later_variations_in_the_lineage_reuse_its_thread(harness):
    """A variation of a variation goes into the same thread: no second thread is opened."""
    fake = harness.fake
    _token, grid = await harness.imagine("a blue ring")
    mark = fake.mark()
    await harness.click(grid, "imagine:v:1:1")
    thread_id = int(grid["id"])
    await fake.wait_for("PATCH", rf"/channels/{thread_id}/messages/\d+", lambda r: bool(r.files), since=mark)
    variation = fake.channel_messages(thread_id)[0]

    mark = fake.mark()
    await harness.click(variation, "imagine:v:2:3")
    status = await fake.wait_for("POST", rf"/channels/{thread_id}/messages", since=mark)
    assert status.content == "#3 variation of #2:3: queued, position 1 in the queue."
    result = await fake.wait_for("PATCH", rf"/channels/{thread_id}/messages/\d+", lambda r: bool(r.files), since=mark)
    assert f"from #2:3: https://discord.com/channels/{GUILD_ID}/{thread_id}/{variation['id']}" in result.content
    assert fake.received("POST", r"/channels/\d+/messages/\d+/threads", since=mark) == []


async def test_upscale_button_sends_the_image_alone_with_a_vary_button(harness):
    """U3 renders image 3 alone (one image of quota) into the thread, with 🔁 but no 🔄."""
    fake = harness.fake
    _token, grid = await harness.imagine("a green heart")
    mark = fake.mark()
    await harness.click(grid, "imagine:u:1:3", user=BOB)
    result = await fake.wait_for("PATCH", rf"/channels/{grid['id']}/messages/\d+", lambda r: bool(r.files), since=mark)
    assert result.content.startswith("#2 upscale of #1:3")
    assert result.custom_ids()[:3] == ["imagine:v:2:1", "imagine:e:2:1", "imagine:z:2:1"]
    assert await harness.quota_used(BOB) == 1


async def test_reroll_button_posts_a_new_grid_in_the_channel(harness):
    """🔄 asks again with a new seed: a new root, in the channel, charged to the presser."""
    fake = harness.fake
    _token, grid = await harness.imagine("a purple moon", n=2)
    mark = fake.mark()
    await harness.click(grid, "imagine:r:1", user=BOB)
    status = await fake.wait_for("POST", rf"/channels/{CHANNEL_ID}/messages", since=mark)
    assert status.content == '#2 reroll "a purple moon": queued, position 1 in the queue.'
    result = await fake.wait_for("PATCH", rf"/channels/{CHANNEL_ID}/messages/\d+", lambda r: bool(r.files), since=mark)
    assert result.custom_ids() == ["imagine:u:2:1", "imagine:u:2:2", "imagine:v:2:1", "imagine:v:2:2", "imagine:r:2"]
    assert await harness.quota_used(BOB) == 2


async def test_cancel_button_cancels_refunds_and_updates_the_status_message(harness):
    """❌ on a queued job: the presser is told privately, the status message says it was
    cancelled (its buttons gone), and the quota comes back."""
    fake, gpu = harness.fake, harness.gpu
    gpu.hold()
    mark = fake.mark()
    payload = await harness.slash("imagine", [{"name": "prompt", "type": 3, "value": "a slow cat"}])
    original = rf"/webhooks/\d+/{payload['token']}/messages/@original"
    await fake.wait_for("PATCH", original, since=mark)
    status = fake.original(payload["token"])

    click = await harness.click(status, "imagine:x:1")
    answer = await fake.wait_for("PATCH", rf"/webhooks/\d+/{click['token']}/messages/@original", since=mark)
    assert answer.content == """Cancelled #1 imagine "a slow cat"; the quota was refunded."""
    updated = await fake.wait_for("PATCH", original, lambda r: "cancelled" in (r.content or ""), since=mark)
    assert updated.body["components"] == []
    assert await harness.quota_used(ALICE) == 0
    gpu.step(1.0)


async def test_button_of_a_job_in_another_server_is_refused_privately(harness):
    """A button's job id cannot reach another team's job: "no job #N in this team", only to the presser."""
    fake = harness.fake
    _token, grid = await harness.imagine("a red star")
    message = fake.messages[int(grid["id"])]
    message["components"][0]["components"][0]["custom_id"] = "imagine:u:99:1"
    mark = fake.mark()
    click = await harness.click(grid, "imagine:u:99:1")
    answer = await fake.wait_for("PATCH", rf"/webhooks/\d+/{click['token']}/messages/@original", since=mark)
    assert answer.content == "There is no job #99 in this team."
    assert fake.original(click["token"])["flags"] & EPHEMERAL


async def test_grid_variation_and_reaction_on_postgresql(fake, gpu, tmp_path, sqlite_template, postgres_url):
    """The same flow on PostgreSQL: grid, V1 into a thread, 🔁 on that variation's image."""
    from tests.bot.discord.conftest import discord_settings, make_settings, running_bot

    settings = make_settings(tmp_path, sqlite_template, database_url=postgres_url)
    async with running_bot(fake, gpu, settings, discord_settings()) as harness:
        _token, grid = await harness.imagine("a red star")
        mark = fake.mark()
        await harness.click(grid, "imagine:v:1:1", user=BOB)
        await fake.wait_for("PATCH", rf"/channels/{grid['id']}/messages/\d+", lambda r: bool(r.files), since=mark)
        mark = fake.mark()
        await harness.click(grid, "imagine:u:1:2", user=BOB)
        await fake.wait_for("PATCH", rf"/channels/{grid['id']}/messages/\d+", lambda r: bool(r.files), since=mark)
        upscaled = fake.channel_messages(int(grid["id"]))[-1]
        mark = fake.mark()
        await harness.react(upscaled, "🔁", user=ALICE)
        status = await fake.wait_for("POST", rf"/channels/{grid['id']}/messages", since=mark)
        assert status.content == "#4 variation of #3:1: queued, position 1 in the queue."
        assert await harness.quota_used(BOB) == 5
