"""Slash commands through the real discord.py client: defer first, then queue, progress, grid."""

from __future__ import annotations

from sqlalchemy import func, select

from engine.store.models import Generation
from tests.bot.discord.conftest import ALICE, CHANNEL_ID, GUILD_ID
from tests.bot.discord.fake_discord import option

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
    assert fake.requests[-1] is defer  # nothing else was sent first
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
        "imagine:u:1:1", "imagine:u:1:2", "imagine:u:1:3", "imagine:u:1:4",
        "imagine:v:1:1", "imagine:v:1:2", "imagine:v:1:3", "imagine:v:1:4", "imagine:r:1",
    ]
    assert final.content.startswith('#1 imagine "a red star"\nseed 7 · model builtin · by alice')
    assert final.body["allowed_mentions"] == NO_PINGS
    message = fake.original(token)
    found = await harness.client.jobs.message_image(CHANNEL_ID, int(message["id"]))
    assert found[1:] == (1, None, "result")  # a reaction on it finds the grid of job 1
