"""Getting results to Discord whatever happens: expired tokens, restarts, 429s, 5xx, big files."""

from __future__ import annotations

import time

from bot.runtime import build_bot_runtime
from tests.bot.discord.conftest import (
    ALICE,
    BOB,
    CHANNEL_ID,
    GUILD_ID,
    ThreadWorker,
    discord_settings,
    start_client,
    stop_client,
)
from tests.fakes.discord_model import option


async def queued(harness, prompt: str, **kwargs) -> dict:
    """Run /imagine with the GPU held; return the interaction once its status message shows."""
    harness.gpu.hold()
    mark = harness.fake.mark()
    payload = await harness.slash("imagine", [option("prompt", prompt)], **kwargs)
    await harness.fake.wait_for("PATCH", rf"/webhooks/\d+/{payload['token']}/messages/@original", since=mark)
    return payload


async def test_expired_token_falls_back_to_a_channel_message(harness):
    """The token dies (401, 50027) before the job ends: the grid is posted with the bot token,
    replying to the old status message, which is turned into a link to it."""
    fake = harness.fake
    payload = await queued(harness, "a red star")
    status = fake.original(payload["token"])
    fake.expire_token(payload["token"])
    mark = fake.mark()
    harness.gpu.step(1.0)

    result = await fake.wait_for("POST", rf"/channels/{CHANNEL_ID}/messages", lambda r: bool(r.files), since=mark)
    assert result.custom_ids()[:1] == ["imagine:u:1:1"]
    assert str(result.body["message_reference"]["message_id"]) == status["id"]
    posted = fake.channel_messages(CHANNEL_ID)[-1]
    pointer = await fake.wait_for("PATCH", rf"/channels/{CHANNEL_ID}/messages/{status['id']}", since=mark)
    assert pointer.content == (
        f'#1 imagine "a red star": finished — https://discord.com/channels/{GUILD_ID}/{CHANNEL_ID}/{posted["id"]}'
    )
    assert pointer.body["components"] == []
    assert len(fake.received("POST", rf"/channels/{CHANNEL_ID}/messages", lambda r: bool(r.files))) == 1


async def test_an_interaction_older_than_15_minutes_is_answered_with_the_bot_token(harness):
    """A job whose interaction is 16 minutes old is delivered by channel message without even
    trying the dead token; its progress goes to the status message through the bot token."""
    fake = harness.fake
    payload = await queued(harness, "a red star", at=time.time() - 16 * 60)
    status = fake.original(payload["token"])
    mark = fake.mark()
    harness.gpu.step(0.5)
    await fake.wait_for(
        "PATCH", rf"/channels/{CHANNEL_ID}/messages/{status['id']}", lambda r: "50%" in (r.content or ""), since=mark
    )
    harness.gpu.step(1.0)
    await fake.wait_for("POST", rf"/channels/{CHANNEL_ID}/messages", lambda r: bool(r.files), since=mark)
    assert fake.received("PATCH", r"/webhooks/.*", since=mark) == []


async def test_restart_delivers_what_finished_while_down_and_old_buttons_still_work(fake, gpu, settings):
    """The bot stops with a job rendering; the job finishes; a new bot process delivers it on
    start, and the grid's buttons (made by the old process) work in the new one."""
    worker = ThreadWorker(settings, gpu)
    runtime = build_bot_runtime(settings, queue=worker)
    client = await start_client(fake, runtime, discord_settings())
    gpu.hold()
    mark = fake.mark()
    payload = {}
    try:
        from tests.bot.discord.conftest import GUILD

        payload = fake.slash_command("imagine", [option("prompt", "a red star")], user=ALICE, guild=GUILD)
        await fake.dispatch("INTERACTION_CREATE", payload)
        await fake.wait_for("PATCH", rf"/webhooks/\d+/{payload['token']}/messages/@original", since=mark)
    finally:
        await stop_client(client)
        await runtime.close()
    gpu.step(1.0)  # renders while no bot runs

    runtime = build_bot_runtime(settings, queue=worker)
    client = await start_client(fake, runtime, discord_settings())
    try:
        await fake.wait_for(
            "PATCH", rf"/webhooks/\d+/{payload['token']}/messages/@original", lambda r: bool(r.files), since=mark
        )
        grid = fake.original(payload["token"])
        gpu.steps = None
        mark = fake.mark()
        click = fake.click(int(grid["id"]), "imagine:v:1:4", user=BOB, guild=GUILD)
        await fake.dispatch("INTERACTION_CREATE", click)
        await fake.wait_for("PATCH", rf"/channels/{grid['id']}/messages/\d+", lambda r: bool(r.files), since=mark)
    finally:
        await stop_client(client)
        await runtime.close()
        worker.close()


async def test_rate_limit_with_via_is_waited_out_and_posts_once(harness):
    """A 429 with `Via` (Discord's own): discord.py waits `retry_after` and retries; one message."""
    fake = harness.fake
    _token, grid = await harness.imagine("a red star")
    thread = grid["id"]
    fake.rate_limit_next("POST", rf"/channels/{thread}/messages", via=True)
    mark = fake.mark()
    await harness.click(grid, "imagine:v:1:1")
    await fake.wait_for("PATCH", rf"/channels/{thread}/messages/\d+", lambda r: bool(r.files), since=mark)
    assert len(fake.received("POST", rf"/channels/{thread}/messages", since=mark)) == 2  # the 429, then the post
    assert len(fake.channel_messages(int(thread))) == 1


async def test_rate_limit_without_via_loses_nothing_and_posts_once(harness):
    """A 429 without `Via` (Cloudflare) raises at once: the status message is skipped, the
    final edit is retried by the delivery loop, and the result still arrives, once."""
    fake = harness.fake
    _token, grid = await harness.imagine("a red star")
    thread = grid["id"]
    fake.rate_limit_next("POST", rf"/channels/{thread}/messages", via=False)
    mark = fake.mark()
    await harness.click(grid, "imagine:v:1:1")
    result = await fake.wait_for("POST", rf"/channels/{thread}/messages", lambda r: bool(r.files), since=mark)
    assert result.custom_ids()[0] == "imagine:u:2:1"
    assert len(fake.channel_messages(int(thread))) == 1

    fake.rate_limit_next("PATCH", r"/webhooks/\d+/[^/]+/messages/@original", via=False)
    mark = fake.mark()
    payload = await harness.slash("imagine", [option("prompt", "a blue ring")])
    await fake.wait_for(
        "PATCH", rf"/webhooks/\d+/{payload['token']}/messages/@original", lambda r: bool(r.files), since=mark
    )
    assert fake.original(payload["token"])["attachments"]


async def test_server_error_after_the_message_was_made_does_not_post_it_twice(harness):
    """A 500 whose message was in fact created: the retry carries the same nonce, and Discord
    (here, the fake) returns the first message instead of making a second."""
    fake = harness.fake
    _token, grid = await harness.imagine("a red star")
    thread = grid["id"]
    fake.fail("POST", rf"/channels/{thread}/messages", status=500, after_effect=True)
    mark = fake.mark()
    await harness.click(grid, "imagine:v:1:2")
    await fake.wait_for("PATCH", rf"/channels/{thread}/messages/\d+", lambda r: bool(r.files), since=mark)
    attempts = fake.received("POST", rf"/channels/{thread}/messages", since=mark)
    assert len(attempts) == 2 and attempts[0].body["nonce"] == attempts[1].body["nonce"]
    assert len(fake.channel_messages(int(thread))) == 1


async def test_an_image_above_the_upload_limit_is_reencoded_not_dropped(harness):
    """A grid larger than the channel's upload limit is sent as a smaller JPEG within it."""
    harness.gpu.large_grid = True
    limit = 120_000
    token, message = await harness.imagine("a noisy sky", upload_limit=limit)
    final = harness.fake.received("PATCH", rf"/webhooks/\d+/{token}/messages/@original", lambda r: bool(r.files))[-1]
    name, data = final.files[0]
    assert name == "imagine-1.jpg" and len(data) <= limit
