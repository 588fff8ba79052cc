"""The Slack bot end to end over HTTP: signed requests into the real AsyncApp on 127.0.0.1, the
real service and an embedded Celery worker behind it, a fake Slack Web API in front."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from sqlalchemy import func, select

from bot.slack.app import SlackBot
from engine.domain.types import Platform
from engine.store.models import AuditLogEntry, Generation
from tests.bot.slack.conftest import ADA, ALICE, BOB, MOD, post_form, post_json
from tests.fakes.slack import FakeSlack, SlackCall
from tests.fakes.slack_requests import block_action, form_body, reaction_event, sign, slash_command


def actions_of(call: SlackCall) -> list[str]:
    """The action ids of every button in a message's blocks."""
    return [
        element["action_id"]
        for block in call.json_param("blocks") or []
        if block["type"] == "actions"
        for element in block["elements"]
    ]


def is_result(call: SlackCall, job_id: int) -> bool:
    return "imagine:vary:1" in actions_of(call) and call.params["text"].startswith(f"#{job_id} ")


async def count_jobs(bot: SlackBot) -> int:
    return await bot.runtime.db.run(lambda s: s.scalar(select(func.count()).select_from(Generation)))


async def imagine(
    fake: FakeSlack, http, bot: SlackBot, text: str, *, user: str = ALICE, channel: str = "C1"
) -> SlackCall:
    """Run /imagine; return the result message (the one with the buttons) once it is delivered."""
    hook = uuid.uuid4().hex
    status, _ = await post_form(
        http, bot, slash_command("/imagine", text, user=user, channel=channel, response_url=fake.response_url(hook))
    )
    assert status == 200
    return await delivered(fake, bot, await job_of(fake, hook))


async def job_of(fake: FakeSlack, hook: str) -> int:
    """The job id a slash command's ephemeral "queued" answer names."""
    queued = await fake.wait_for("response_url", where=lambda c: c.params["hook"] == hook)
    return int(queued.params["text"].split()[0].lstrip("#"))


async def delivered(fake: FakeSlack, bot: SlackBot, job_id: int, timeout: float = 20.0) -> SlackCall:
    """Wait for a job's delivery to finish: its result message posted and recorded (so a reaction
    on it finds the job), its status message deleted.

    The delete alone does not say the result is recorded: when a job finishes before its status
    message is recorded, the poster deletes that message itself, while the delivery may still be
    between posting the result and recording it."""
    progress = await fake.wait_for(
        "chat.postMessage",
        where=lambda c: c.params["text"].startswith(f"#{job_id} ") and "imagine:cancel" in actions_of(c),
    )
    result = await fake.wait_for("chat.postMessage", where=lambda c: is_result(c, job_id))
    await fake.wait_for("chat.delete", where=lambda c: c.params["ts"] == progress.response["ts"])
    deadline = time.monotonic() + timeout
    while (
        await bot.runtime.deliveries.message_target(Platform.SLACK, result.params["channel"], result.response["ts"])
        is None
    ):
        assert time.monotonic() < deadline, f"job {job_id}'s result message was never recorded"
        await asyncio.sleep(0.05)
    return result


async def test_imagine_acks_then_uploads_grid_with_buttons(bots, fake_slack, http):
    """/imagine acks at once, then the grid is uploaded (files_upload_v2) with V1-4/U1-4/Reroll buttons."""
    bot = await bots.start()
    started = time.monotonic()
    status, body = await post_form(
        http,
        bot,
        slash_command("/imagine", "a red star --seed 7", user=ALICE, response_url=fake_slack.response_url("r1")),
    )
    assert (status, body) == (200, "")
    assert time.monotonic() - started < 3

    queued = await fake_slack.wait_for("response_url")
    assert queued.params == {
        "hook": "r1",
        "response_type": "ephemeral",
        "text": '#1 imagine "a red star": queued, position 1 in the queue.',
    }
    progress = await fake_slack.wait_for("chat.postMessage")
    assert progress.params["channel"] == "C1" and actions_of(progress) == ["imagine:cancel"]

    # Steps 1 and 3 of files_upload_v2 carry their arguments in the query string, not the body.
    step1 = await fake_slack.wait_for("files.getUploadURLExternal")
    assert step1.body == b"" and step1.params["filename"] == "imagine-1.png"
    step2 = await fake_slack.wait_for("upload")
    assert step2.body.startswith(b"\x89PNG") and int(step1.params["length"]) == len(step2.body)
    step3 = await fake_slack.wait_for("files.completeUploadExternal")
    assert step3.body == b"" and step3.params["channel_id"] == "C1" and "thread_ts" not in step3.params
    assert json.loads(step3.params["files"])[0]["id"] == step2.params["file_id"]

    result = await fake_slack.wait_for("chat.postMessage", where=lambda c: is_result(c, 1))
    assert result.params["channel"] == "C1" and "thread_ts" not in result.params
    assert actions_of(result) == [
        "imagine:vary:1",
        "imagine:vary:2",
        "imagine:vary:3",
        "imagine:vary:4",
        "imagine:reroll",
        "imagine:upscale:1",
        "imagine:upscale:2",
        "imagine:upscale:3",
        "imagine:upscale:4",
    ]
    assert '#1 imagine "a red star"\nseed 7' in result.params["text"]
    deleted = await fake_slack.wait_for("chat.delete")
    assert deleted.params == {"channel": "C1", "ts": progress.response["ts"]}
    assert ("C1", progress.response["ts"]) not in fake_slack.messages


async def test_variation_button_result_goes_into_root_thread(bots, fake_slack, http):
    """V2 under a grid queues variations of image 2, delivered into the grid's thread."""
    bot = await bots.start()
    result_ts = (await imagine(fake_slack, http, bot, "a blue ring")).response["ts"]

    status, _ = await post_form(
        http,
        bot,
        block_action(
            "imagine:vary:2", "1", user=BOB, channel="C1", message_ts=result_ts, response_url=fake_slack.response_url()
        ),
    )
    assert status == 200
    # The status message (the one with Cancel), not the first message in the thread: a fast worker
    # can finish and post the result before the status message's own request reaches Slack.
    progress = await fake_slack.wait_for(
        "chat.postMessage", where=lambda c: c.params.get("thread_ts") == result_ts and "imagine:cancel" in actions_of(c)
    )
    assert progress.params["text"].startswith("#2 variation of #1:2: queued")
    upload = await fake_slack.wait_for("files.completeUploadExternal", count=2)
    assert upload.params["thread_ts"] == result_ts
    child = await delivered(fake_slack, bot, 2)
    assert child.params["thread_ts"] == result_ts
    assert child.params["text"].startswith("#2 variation of #1:2")


async def test_reactions_ask_for_variations_in_the_thread(bots, fake_slack, http):
    """:three: on the grid image and :two: on its buttons message vary that image, in the root's thread."""
    bot = await bots.start()
    result_ts = (await imagine(fake_slack, http, bot, "a green square")).response["ts"]
    share_ts = next(ts for (ch, ts), m in fake_slack.messages.items() if m.files)

    status, _ = await post_json(http, bot, reaction_event("three", user=BOB, channel="C1", ts=share_ts))
    assert status == 200
    first = await delivered(fake_slack, bot, 2)
    assert first.params["text"].startswith("#2 variation of #1:3")
    assert first.params["thread_ts"] == result_ts

    await post_json(http, bot, reaction_event("two", user=BOB, channel="C1", ts=result_ts))
    second = await delivered(fake_slack, bot, 3)
    assert second.params["text"].startswith("#3 variation of #1:2")
    assert second.params["thread_ts"] == result_ts


async def test_repeat_on_a_grid_asks_which_image(bots, fake_slack, http):
    """:repeat: on a four-image grid queues nothing and tells the reacting user to pick one."""
    bot = await bots.start()
    result_ts = (await imagine(fake_slack, http, bot, "a green square")).response["ts"]
    await post_json(http, bot, reaction_event("repeat", user=BOB, channel="C1", ts=result_ts))
    told = await fake_slack.wait_for("chat.postEphemeral")
    assert told.params["user"] == BOB and "Job #1 has 4 images: say which" in told.params["text"]
    assert await count_jobs(bot) == 1


async def test_same_event_three_times_makes_one_job(bots, fake_slack, http):
    """One reaction event delivered three times (Slack's retries) is acked each time and makes one job."""
    bot = await bots.start()
    result_ts = (await imagine(fake_slack, http, bot, "a red star --n 1")).response["ts"]
    event = reaction_event("repeat", user=BOB, channel="C1", ts=result_ts, event_id="EvSAME")
    answers = await asyncio.gather(
        *(
            post_json(
                http,
                bot,
                event,
                headers={"X-Slack-Retry-Num": retry, "X-Slack-Retry-Reason": "timeout"} if retry else {},
            )
            for retry in (None, "1", "2")
        )
    )
    assert [status for status, _ in answers] == [200, 200, 200]
    await delivered(fake_slack, bot, 2)
    assert await count_jobs(bot) == 2
    assert (
        len(
            fake_slack.received(
                "chat.postMessage", where=lambda c: "variation" in c.params["text"] and "queued" in c.params["text"]
            )
        )
        == 1
    )


async def test_retried_event_to_another_replica_makes_one_job(tmp_path, bots, fake_slack, http, database_url):
    """A retried event reaching a second replica on the same database is acked and makes no second job."""
    from tests.bot.slack.conftest import bot_settings

    settings = bot_settings(tmp_path, bots.sqlite_template, database_url)
    replica_a = await bots.start(settings=settings)
    replica_b = await bots.start(settings=settings, worker=False)
    result_ts = (await imagine(fake_slack, http, replica_a, "a red star --n 1")).response["ts"]
    event = reaction_event("repeat", user=BOB, channel="C1", ts=result_ts, event_id="EvACROSS")
    assert (await post_json(http, replica_a, event))[0] == 200
    assert (await post_json(http, replica_b, event, headers={"X-Slack-Retry-Num": "1"}))[0] == 200
    await delivered(fake_slack, replica_a, 2)
    assert await count_jobs(replica_a) == 2


async def test_forged_or_stale_requests_are_refused(bots, fake_slack, http):
    """A forged signature or a 6-minute-old timestamp gets 401 and queues nothing."""
    bot = await bots.start(worker=False)
    fields = slash_command("/imagine", "a red star", user=ALICE, response_url=fake_slack.response_url())
    body = form_body(fields)
    forged = sign(body, secret="not-the-secret")
    stale = sign(body, timestamp=int(time.time()) - 6 * 60)
    assert (await post_form(http, bot, fields, signature=forged))[0] == 401
    assert (await post_form(http, bot, fields, signature=stale))[0] == 401
    assert (await post_form(http, bot, fields, signature={}))[0] == 401
    assert await count_jobs(bot) == 0
    assert fake_slack.received("response_url") == [] and fake_slack.received("users.info") == []


async def test_mention_injection_never_pings(bots, fake_slack, http):
    """Broadcasts and mentions in a prompt reach Slack escaped, in verbatim blocks, in every message."""
    bot = await bots.start()
    prompt = "<!everyone> <!channel> <!here> <@UBOB> <!subteam^SMODS> @here & a cat"
    await imagine(fake_slack, http, bot, prompt)
    await fake_slack.wait_for("chat.delete")
    texts = []
    for call in fake_slack.calls:
        if call.method in (
            "chat.postMessage",
            "chat.update",
            "response_url",
            "chat.postEphemeral",
            "files.completeUploadExternal",
        ):
            assert call.params.get("link_names") in (None, False, "false", "0")
            assert call.params.get("parse") in (None, "none")
            texts.append(call.params.get("text") or call.params.get("initial_comment") or "")
            for block in call.json_param("blocks") or []:
                for element in [block.get("text")] + block.get("elements", []):
                    if element and element.get("type") == "mrkdwn":
                        assert element["verbatim"] is True
                        texts.append(element["text"])
    shown = [t for t in texts if "cat" in t]
    assert len(shown) >= 4  # ephemeral, status, result text and its section block
    for text in texts:
        assert "<!" not in text and "<@" not in text, text
    assert "&lt;!everyone&gt; &lt;!channel&gt; &lt;!here&gt; &lt;@UBOB&gt;" in shown[0]
    assert "@\u2060here &amp; a cat" in shown[0]


async def test_work_that_raises_after_the_ack_still_acked(bots, fake_slack, http):
    """Work that raises after the ack leaves the 200 in place and tells the user something went wrong."""
    bot = await bots.start(worker=False)

    async def broken_directory(*args, **kwargs):
        raise RuntimeError("the directory broke")

    bot.adapter.directory.actor = broken_directory
    started = time.monotonic()
    status, _ = await post_form(
        http, bot, slash_command("/imagine", "a red star", user=ALICE, response_url=fake_slack.response_url())
    )
    assert status == 200 and time.monotonic() - started < 3
    apology = await fake_slack.wait_for("response_url")
    assert apology.params["text"].startswith("Sorry, something went wrong")
    assert await count_jobs(bot) == 0


async def test_usage_errors_are_specific_and_queue_nothing(bots, fake_slack, http):
    """A bad option is answered with what was wrong, only to the user; nothing is queued."""
    bot = await bots.start(worker=False)
    await post_form(
        http,
        bot,
        slash_command("/imagine", "a cat --n 9 <!channel>", user=ALICE, response_url=fake_slack.response_url()),
    )
    error = await fake_slack.wait_for("response_url")
    assert error.params == {
        "hook": error.params["hook"],
        "response_type": "ephemeral",
        "text": "--n must be a whole number, got '9 &lt;!channel&gt;'.",
    }
    assert await count_jobs(bot) == 0


async def test_admin_commands_need_rights(bots, fake_slack, http):
    """/imagine-admin refuses members, obeys admins and moderator user groups, and audits every action."""
    bot = await bots.start(worker=False)

    async def admin(text: str, user: str) -> str:
        hook = fake_slack.response_url()
        await post_form(http, bot, slash_command("/imagine-admin", text, user=user, response_url=hook))
        answer = await fake_slack.wait_for("response_url", where=lambda c: c.params["hook"] == hook.rsplit("/", 1)[1])
        assert answer.params["response_type"] == "ephemeral"
        return answer.params["text"]

    assert (await admin("quota set <@UBOB|bob> 5", ALICE)).startswith("Only moderators can set quotas")
    assert await admin("quota set <@UBOB|bob> 5", ADA) == "Daily quota for user UBOB set to 5 images/day."
    assert (await admin("ban <@UBOB|bob> spam", MOD)).startswith("Only moderators can ban users")
    assert (
        await admin("mod-role add <!subteam^SMODS|@mods>", ADA)
        == "Members of role SMODS are now imagine-bot moderators."
    )
    assert await admin("ban <@UBOB|bob> spam", MOD) == "User UBOB is banned: spam"
    assert (
        await admin("quota grant <!subteam^SMODS|@mods> 3", MOD) == "Granted 3 extra image(s) for today to role SMODS."
    )
    audit = await admin("audit", ADA)
    for action in ("quota.set user UBOB", "moderator_role.add role SMODS", "ban user UBOB", "quota.grant role SMODS"):
        assert action in audit
    assert (await admin("stats", ALICE)).startswith("Only moderators can see statistics")
    assert (await admin("stats", MOD)).startswith("Last 7 days: 0 jobs")
    assert await admin("quota set <@UBOB|bob>", ADA) == "Use `quota set &lt;target&gt; &lt;N|unlimited&gt;`."

    hook = fake_slack.response_url("banned")
    await post_form(http, bot, slash_command("/imagine", "a cat", user=BOB, response_url=hook))
    refused = await fake_slack.wait_for("response_url", where=lambda c: c.params["hook"] == "banned")
    assert refused.params["text"] == "You are banned from imagine-bot in this team: spam"


async def test_remove_reaction_by_requester_or_moderator(bots, fake_slack, http):
    """:x: removes a job's messages for its requester or a moderator (audited), not for others."""
    bot = await bots.start()
    result_ts = (await imagine(fake_slack, http, bot, "a red star")).response["ts"]

    await post_json(http, bot, reaction_event("x", user=BOB, channel="C1", ts=result_ts))
    refused = await fake_slack.wait_for("chat.postEphemeral")
    assert refused.params["user"] == BOB and "can remove it" in refused.params["text"]
    assert ("C1", result_ts) in fake_slack.messages

    await post_json(http, bot, reaction_event("x", user=ALICE, channel="C1", ts=result_ts))
    await fake_slack.wait_for("files.delete")
    await fake_slack.wait_for("chat.delete", where=lambda c: c.params["ts"] == result_ts)
    assert fake_slack.messages == {}

    second_ts = (await imagine(fake_slack, http, bot, "a blue ring")).response["ts"]
    await post_json(http, bot, reaction_event("x", user=ADA, channel="C1", ts=second_ts))
    await fake_slack.wait_for("chat.delete", where=lambda c: c.params["ts"] == second_ts)
    entries = await bot.runtime.db.run(lambda s: s.scalars(select(AuditLogEntry.target)).all())
    assert entries == ["job #2"]


async def test_rate_limited_calls_wait_for_retry_after(bots, fake_slack, http):
    """A 429 with Retry-After on chat.postMessage is retried after that many seconds."""
    bot = await bots.start(worker=False)
    fake_slack.fail("chat.postMessage", status=429, retry_after=1)
    await post_form(
        http, bot, slash_command("/imagine", "a red star", user=ALICE, response_url=fake_slack.response_url())
    )
    posted = await fake_slack.wait_for("chat.postMessage", count=2)
    first = fake_slack.received("chat.postMessage")[0]
    assert posted.at - first.at >= 1.0
    assert posted.params["text"].startswith('#1 imagine "a red star": queued')


async def test_failed_upload_is_retried_and_never_lost(bots, fake_slack, http):
    """An upload that keeps failing is retried after the lease; the grid then arrives exactly once."""
    bot = await bots.start()
    fake_slack.fail("upload", status=500, times=3)  # more than the client's own retry
    await post_form(
        http, bot, slash_command("/imagine", "a red star", user=ALICE, response_url=fake_slack.response_url())
    )
    await fake_slack.wait_for("chat.postMessage", where=lambda c: is_result(c, 1), timeout=30)
    assert len(fake_slack.received("upload")) == 4
    assert len(fake_slack.received("files.completeUploadExternal")) == 1
    assert len(fake_slack.received("chat.postMessage", where=lambda c: is_result(c, 1))) == 1


async def test_variations_of_an_image_shared_in_the_channel(bots, fake_slack, http):
    """:repeat: on a shared picture downloads it with the bot token and varies it, in its thread."""
    from PIL import Image

    from engine.images import encode_png

    bot = await bots.start()
    photo = fake_slack.add_file_message("C1", BOB, encode_png(Image.new("RGB", (32, 32), (200, 10, 10))))
    await post_json(http, bot, reaction_event("x", user=BOB, channel="C1", ts=photo.ts, item_user=BOB))
    await post_json(http, bot, reaction_event("two", user=BOB, channel="C1", ts=photo.ts, item_user=BOB))
    await post_json(http, bot, reaction_event("repeat", user=BOB, channel="C1", ts=photo.ts, item_user=BOB))
    download = await fake_slack.wait_for("download")
    assert download.headers["Authorization"] == f"Bearer {fake_slack.bot_token}"
    result = await fake_slack.wait_for("chat.postMessage", where=lambda c: is_result(c, 1))
    assert result.params["thread_ts"] == photo.ts
    assert result.params["text"].startswith("#1 variation")
    # Other reactions on someone's message are just reactions: nothing fetched, nothing queued.
    assert len(fake_slack.received("conversations.history")) == 1 and await count_jobs(bot) == 1


async def test_history_quota_thread_and_blend(tmp_path, bots, fake_slack, http, tiny_model_dir):
    """history, quota, thread and help answer through the shared parser; blend renders with the tiny model."""
    from tests.bot.slack.conftest import bot_settings

    settings = bot_settings(tmp_path, bots.sqlite_template)
    settings.render.backend, settings.render.model = "unclip", str(tiny_model_dir)
    bot = await bots.start(settings=settings)
    await imagine(fake_slack, http, bot, "a red star --n 2")

    async def ask(text: str) -> SlackCall:
        hook = fake_slack.response_url()
        await post_form(http, bot, slash_command("/imagine", text, user=ALICE, response_url=hook))
        return await fake_slack.wait_for("response_url", where=lambda c: c.params["hook"] == hook.rsplit("/", 1)[1])

    history = await ask("history")
    assert history.params["response_type"] == "ephemeral"
    assert "Your jobs (page 1 of 1, 1 in all)" in history.params["text"]
    assert "198 of 200 images left today" in (await ask("quota")).params["text"]
    thread = await ask("thread 1")
    assert thread.params["response_type"] == "in_channel"
    assert thread.params["text"] == '#1 imagine "a red star" (2 images)'
    blend = await ask("blend 1:1 1:2 --n 1")
    assert blend.params["text"].startswith("#2 blend of #1:1 + #1:2: queued")
    await fake_slack.wait_for("chat.postMessage", where=lambda c: is_result(c, 2))
    help_text = (await ask("help")).params["text"]
    assert "/imagine &lt;prompt&gt;" in help_text and "<" not in help_text


async def test_cancel_button_cancels_and_updates_status(bots, fake_slack, http):
    """Cancel on a queued job's status message cancels it and turns the message into the outcome."""
    bot = await bots.start(worker=False)  # no worker: the job stays queued
    await post_form(
        http, bot, slash_command("/imagine", "a red star", user=ALICE, response_url=fake_slack.response_url("q"))
    )
    await job_of(fake_slack, "q")  # answered once its status message is posted and recorded
    progress = await fake_slack.wait_for("chat.postMessage")
    ts = progress.response["ts"]
    await post_form(
        http,
        bot,
        block_action(
            "imagine:cancel", "1", user=ALICE, channel="C1", message_ts=ts, response_url=fake_slack.response_url("c")
        ),
    )
    answer = await fake_slack.wait_for("response_url", where=lambda c: c.params["hook"] == "c")
    assert answer.params["text"].startswith('Cancelled #1 imagine "a red star"')
    assert answer.params["replace_original"] is False
    update = await fake_slack.wait_for("chat.update", where=lambda c: "cancelled" in c.params["text"])
    assert update.params["ts"] == ts and actions_of(update) == []
    assert progress.params["text"].endswith("queued, position 1 in the queue.")


async def test_public_channel_is_joined_and_private_one_refused(bots, fake_slack, http):
    """The bot joins a public channel to post; in a private one it cancels the job and asks to be invited."""
    bot = await bots.start(worker=False)
    fake_slack.fail("chat.postMessage", status=200, error="not_in_channel")
    hook = uuid.uuid4().hex
    await post_form(
        http,
        bot,
        slash_command(
            "/imagine", "a red star", user=ALICE, channel="CPUBLIC", response_url=fake_slack.response_url(hook)
        ),
    )
    assert (await job_of(fake_slack, hook)) == 1
    assert (await fake_slack.wait_for("conversations.join")).params["channel"] == "CPUBLIC"
    assert len(fake_slack.received("chat.postMessage")) == 2

    fake_slack.fail("chat.postMessage", status=200, error="not_in_channel")
    fake_slack.fail("conversations.join", status=200, error="method_not_supported_for_channel_type")
    hook = uuid.uuid4().hex
    await post_form(
        http,
        bot,
        slash_command(
            "/imagine", "a red star", user=ALICE, channel="GPRIVATE", response_url=fake_slack.response_url(hook)
        ),
    )
    told = await fake_slack.wait_for("response_url", where=lambda c: c.params["hook"] == hook)
    assert told.params["text"].startswith("imagine-bot cannot post in this channel")
    job = await bot.runtime.deliveries.generation(2)
    assert job.status == "cancelled"
    quota = await bot.runtime.service.quota(await bot.adapter.directory.actor("T0FAKE", ALICE))
    assert quota.used == 4  # only the first job's four images


async def test_rate_limited_progress_edit_pauses_instead_of_waiting(bots, fake_slack, http):
    """A 429 on a progress edit pauses edits instead of holding up the delivery loop."""
    import dataclasses

    from engine.domain.types import GenerationStatus

    bot = await bots.start(worker=False)
    await post_form(
        http, bot, slash_command("/imagine", "a red star", user=ALICE, response_url=fake_slack.response_url("p"))
    )
    job = await bot.runtime.deliveries.generation(await job_of(fake_slack, "p"))  # status message recorded
    running = dataclasses.replace(job, status=GenerationStatus.RUNNING, progress=0.5)
    fake_slack.fail("chat.update", status=429, retry_after=30)
    await asyncio.wait_for(bot.adapter.show_progress(running), timeout=5)
    await asyncio.wait_for(bot.adapter.show_progress(running), timeout=5)
    assert len(fake_slack.received("chat.update")) == 1


@pytest.mark.parametrize("step", ["file", "result"])
async def test_delivery_cut_off_after_posting_does_not_post_twice(bots, fake_slack, http, step):
    """A delivery that dies after a step reached Slack but before it was recorded (a replica
    killed there) is retried after the lease, finds that step in Slack by its metadata or file
    name, and does not post it again."""
    bot = await bots.start()
    deliveries = bot.runtime.deliveries
    real_record = deliveries.record_message
    cut = []

    async def record_then_die(platform, channel, message_id, generation_id, image_index=None, role="result"):
        if role == step and not cut:
            cut.append(message_id)
            raise ConnectionError("the replica died here")
        return await real_record(platform, channel, message_id, generation_id, image_index, role=role)

    deliveries.record_message = record_then_die
    await post_form(
        http, bot, slash_command("/imagine", "a red star", user=ALICE, response_url=fake_slack.response_url())
    )
    await delivered(fake_slack, bot, 1, timeout=30)
    assert cut
    assert len(fake_slack.received("upload")) == 1
    assert len(fake_slack.received("files.completeUploadExternal")) == 1
    assert len(fake_slack.received("chat.postMessage", where=lambda c: is_result(c, 1))) == 1
    job = await deliveries.generation(1)
    assert job.delivery_attempts == 2
    for _ in range(100):
        if (await deliveries.generation(1)).delivered_at is not None:
            break
        await asyncio.sleep(0.05)
    assert (await deliveries.generation(1)).delivered_at is not None
