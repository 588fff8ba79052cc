"""Socket Mode: the same app over a websocket (a fake Socket Mode server), no public URL."""

from __future__ import annotations

from tests.bot.slack.conftest import ALICE, BOB
from tests.bot.slack.test_app import delivered
from tests.fakes.slack_requests import reaction_event, slash_command


async def test_slash_command_over_socket_mode(bots, fake_slack):
    """Over Socket Mode a slash command's envelope is acked and its job queued and delivered."""
    await bots.start(mode="socket", signing_secret="")
    await fake_slack.wait_for_socket()
    opened = fake_slack.received("apps.connections.open")[0]
    assert opened.headers["Authorization"] == f"Bearer {fake_slack.app_token}"

    envelope = await fake_slack.send_envelope(
        "slash_commands",
        slash_command("/imagine", "a red star --n 1", user=ALICE, response_url=fake_slack.response_url("s1")),
    )
    ack = await fake_slack.wait_for_socket_ack(envelope)
    assert ack == {"envelope_id": envelope}
    queued = await fake_slack.wait_for("response_url")
    assert queued.params["text"] == '#1 imagine "a red star": queued, position 1 in the queue.'
    result = await fake_slack.wait_for(
        "chat.postMessage", where=lambda c: c.params["text"].startswith('#1 imagine "a red star"\n')
    )
    assert result.params["channel"] == "C1"


async def test_socket_mode_retried_event_makes_one_job(bots, fake_slack):
    """An events_api envelope sent again as a retry (retry_attempt 1) is acked and ignored."""
    bot = await bots.start(mode="socket", signing_secret="")
    await fake_slack.wait_for_socket()
    await fake_slack.send_envelope(
        "slash_commands",
        slash_command("/imagine", "a red star --n 1", user=ALICE, response_url=fake_slack.response_url()),
    )
    result = await delivered(fake_slack, bot, 1)
    result_ts = result.response["ts"]

    event = reaction_event("repeat", user=BOB, channel="C1", ts=result_ts, event_id="EvSOCKET")
    first = await fake_slack.send_envelope("events_api", event)
    again = await fake_slack.send_envelope("events_api", event, retry_attempt=1)
    await fake_slack.wait_for_socket_ack(first)
    await fake_slack.wait_for_socket_ack(again)
    await delivered(fake_slack, bot, 2)
    assert await bot.runtime.events.first_time(bot.adapter.platform, "EvSOCKET") is False
    assert len(fake_slack.received("chat.postMessage", where=lambda c: "queued" in c.params["text"])) == 2
