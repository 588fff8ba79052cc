"""The Slack bot against hostile and careless input: replays, bodies that do not parse, numbers
that are not numbers, mentions in alt text — each refused clearly, never a 5xx, never charged."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.slack.app import signed_by_slack
from tests.bot.slack.conftest import ALICE, BOB, events_url, post_form
from tests.bot.slack.test_app import count_jobs, delivered, imagine
from tests.fakes.slack_requests import SIGNING_SECRET, block_action, form_body, sign, slash_command


@pytest.fixture(scope="module")
def slack_bot_for_fuzzing(tmp_path_factory, sqlite_template):
    """One real Slack bot (and fake Slack) on an event loop of its own, for hypothesis to hit
    many times: (its URL, that loop)."""
    import threading

    from bot.runtime import build_bot_runtime
    from bot.slack.app import SlackBot
    from tests.bot.slack.conftest import bot_settings, slack_settings
    from tests.fakes.slack import FakeSlack

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start():
        fake = await FakeSlack().start()
        fake.add_user(ALICE, "Alice")
        runtime = build_bot_runtime(bot_settings(tmp_path_factory.mktemp("fuzz"), sqlite_template))
        bot = SlackBot(runtime, slack_settings(fake))
        await bot.start()
        return fake, runtime, bot

    fake, runtime, bot = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    yield events_url(bot), loop

    async def stop():
        await bot.stop()
        await runtime.close()
        await fake.stop()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(60)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


async def post_raw(
    http: aiohttp.ClientSession,
    bot,
    body: bytes,
    *,
    signed: bool = True,
    content_type: str = "application/x-www-form-urlencoded",
) -> tuple[int, str]:
    headers = {"Content-Type": content_type}
    if signed:
        timestamp = str(int(time.time()))
        import hashlib
        import hmac

        digest = hmac.new(SIGNING_SECRET.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256)
        headers.update({"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": "v0=" + digest.hexdigest()})
    async with http.post(events_url(bot), data=body, headers=headers) as response:
        return response.status, await response.text()


async def test_a_replayed_slash_command_makes_one_job(tmp_path, bots, fake_slack, http, database_url):
    """The same signed /imagine sent again — to the same replica or another — is answered 200
    and makes no second job and no second charge."""
    from tests.bot.slack.conftest import bot_settings

    settings_ = bot_settings(tmp_path, bots.sqlite_template, database_url)
    first = await bots.start(settings=settings_)
    second = await bots.start(settings=settings_, worker=False)
    fields = slash_command("/imagine", "a red star --n 2", user=ALICE, response_url=fake_slack.response_url())
    signature = sign(form_body(fields))
    for bot in (first, first, second):
        assert (await post_form(http, bot, fields, signature=signature))[0] == 200
    await delivered(fake_slack, first, 1)
    await asyncio.sleep(0.5)
    assert await count_jobs(first) == 1
    assert (await first.runtime.service.quota(_actor(ALICE))).used == 2


async def test_a_replayed_button_press_makes_one_variation(bots, fake_slack, http):
    """A signed button press replayed makes one variation job."""
    bot = await bots.start()
    result_ts = (await imagine(fake_slack, http, bot, "a blue ring")).response["ts"]
    fields = block_action(
        "imagine:vary:2", "1", user=BOB, channel="C1", message_ts=result_ts, response_url=fake_slack.response_url()
    )
    signature = sign(form_body(fields))
    for _ in range(3):
        assert (await post_form(http, bot, fields, signature=signature))[0] == 200
    await delivered(fake_slack, bot, 2)
    await asyncio.sleep(0.5)
    assert await count_jobs(bot) == 2


@pytest.mark.parametrize(
    "body",
    [
        b"payload=not-json",
        b"payload=%5B%5D",
        b"payload=null",
        b"payload=%22text%22",
        b"[]",
        b"null",
        b"\xff\xfe\x00garbage",
        b"",
        b"=&=&",
        b"payload=" + quote(json.dumps({"type": 7})).encode(),
    ],
)
async def test_signed_bodies_that_cannot_be_read_get_400(bots, http, body, caplog):
    """A signed body that is not a form or JSON object Slack would send: 400, no traceback."""
    bot = await bots.start(worker=False)
    caplog.set_level(logging.INFO)
    status, _ = await post_raw(http, bot, body)
    if body.startswith(b"payload=%7B"):
        assert status == 404  # an object Slack could send, of a type nobody listens to (bolt's answer)
    else:
        assert status == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert await count_jobs(bot) == 0


async def test_unsigned_garbage_gets_401_without_a_traceback(bots, http, caplog):
    """Unsigned bytes of any kind are refused before anything parses them."""
    bot = await bots.start(worker=False)
    for body in (b"payload=not-json", b"\xff\xfe", b"[]", b"x" * 10_000):
        assert (await post_raw(http, bot, body, signed=False))[0] == 401
    async with http.post(
        events_url(bot), data=b"payload=1", headers={"X-Slack-Request-Timestamp": "१२३", "X-Slack-Signature": "v0=é"}
    ) as response:
        assert response.status == 401
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("value", ["²", "99999999999999999999", "999999999999", "-1", "1e3", ""])
async def test_button_values_that_are_not_job_numbers_are_answered(bots, fake_slack, http, value):
    """A button whose value no button of ours carries is answered with what is wrong (not
    silence, not the apology) and starts nothing."""
    bot = await bots.start(worker=False)
    hook = f"button-{abs(hash(value))}"
    fields = block_action(
        "imagine:vary:1", value, user=BOB, channel="C1", message_ts="1.1", response_url=fake_slack.response_url(hook)
    )
    assert (await post_form(http, bot, fields))[0] == 200
    answer = await fake_slack.wait_for("response_url", where=lambda c: c.params["hook"] == hook)
    assert "Sorry, something went wrong" not in answer.params["text"]
    assert "job" in answer.params["text"]
    assert await count_jobs(bot) == 0


async def test_alt_text_is_escaped(bots, fake_slack, http):
    """The grid's alt text carries the prompt escaped, like every text the bot sends."""
    bot = await bots.start()
    await imagine(fake_slack, http, bot, "<!everyone> a <@U1> star & moon")
    alt = (await fake_slack.wait_for("files.getUploadURLExternal")).params.get("alt_txt")
    assert alt is not None and "<!everyone>" not in alt and "<@U1>" not in alt and "&amp;" in alt


def test_signature_check_takes_any_bytes():
    """The raw-bytes check says yes to Slack's signature and no to everything else, whatever the
    bytes and header values are."""
    body = b"\xff\xfe not utf-8"
    now = time.time()
    timestamp = str(int(now))
    import hashlib
    import hmac

    good = "v0=" + hmac.new(b"s", b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    assert signed_by_slack(body, {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": good}, "s")
    for headers in (
        {},
        {"X-Slack-Request-Timestamp": "abc", "X-Slack-Signature": good},
        {"X-Slack-Request-Timestamp": "٣", "X-Slack-Signature": good},
        {"X-Slack-Request-Timestamp": str(int(now) - 400), "X-Slack-Signature": good},
        {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": good + "0"},
    ):
        assert not signed_by_slack(body, headers, "s")


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(lambda t: ("payload=" + quote(t)).encode()),
        st.dictionaries(
            st.sampled_from(["command", "text", "user_id", "team_id", "channel_id", "payload", "type"]),
            st.text(max_size=40),
            max_size=6,
        ).map(lambda d: form_body(d).encode()),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda children: (
                st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
            ),
            max_leaves=8,
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_no_signed_body_gets_a_server_error(slack_bot_for_fuzzing, body):
    """Whatever a signed request carries, the answer is 200, 400 or 404 — never a 5xx."""
    url, loop = slack_bot_for_fuzzing

    async def send() -> int:
        import hashlib
        import hmac

        timestamp = str(int(time.time()))
        digest = hmac.new(SIGNING_SECRET.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256)
        headers = {
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": "v0=" + digest.hexdigest(),
            "Content-Type": "application/json" if body[:1] in (b"{", b"[") else "application/x-www-form-urlencoded",
        }
        async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
            return response.status

    status = asyncio.run_coroutine_threadsafe(send(), loop).result(30)
    assert status < 500


def _actor(user):
    from engine.domain.types import Actor, Platform

    return Actor(Platform.SLACK, "T0FAKE", user)


async def test_repeat_on_a_picture_shared_in_a_thread_finds_it_through_its_parent(bots, fake_slack, http):
    """:repeat: on a picture posted as a reply: the bot finds the message through its thread's
    parent (conversations.replies takes the parent's ts, with the reply's as the window) and
    varies it in that thread."""
    from PIL import Image

    from engine.images import encode_png
    from tests.bot.slack.conftest import post_json
    from tests.bot.slack.test_app import is_result
    from tests.fakes.slack_requests import reaction_event

    bot = await bots.start()
    parent = fake_slack.add_message("C1", BOB, "look at this")
    fake_slack.add_message("C1", ALICE, "nice", thread_ts=parent.ts)
    photo = fake_slack.add_file_message(
        "C1", BOB, encode_png(Image.new("RGB", (32, 32), (10, 200, 10))), thread_ts=parent.ts
    )
    await post_json(http, bot, reaction_event("repeat", user=BOB, channel="C1", ts=photo.ts, item_user=BOB))
    result = await fake_slack.wait_for("chat.postMessage", where=lambda c: is_result(c, 1))
    assert result.params["thread_ts"] == parent.ts
    replies = fake_slack.received("conversations.replies")
    assert replies and all(c.response.get("ok") for c in replies)
    assert replies[-1].params["ts"] == parent.ts and replies[-1].params["oldest"] == photo.ts
