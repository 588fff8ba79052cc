"""The fakes answer as the platforms' published API references say (discord/discord-api-spec
`specs/openapi.json`; Slack's method reference), for the calls the bot makes — so a change that
relies on a field the real API does not send fails here, not in production."""

from __future__ import annotations

import aiohttp

from tests.bot.discord.conftest import ALICE, GUILD
from tests.bot.discord.fake_discord import FakeDiscord, option
from tests.bot.slack.fake_slack import BOT_TOKEN, FakeSlack


async def discord_call(fake: FakeDiscord, method: str, path: str, body: dict) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method,
            f"http://127.0.0.1:{fake.port}/api/v10{path}?with_response=true",
            json=body,
            headers={"Authorization": "Bot fake"},
        ) as response,
    ):
        return response.status, await response.json()


async def test_interaction_callbacks_carry_a_message_only_for_types_4_and_7():
    """InteractionCallbackResponse: `resource.message` for CHANNEL_MESSAGE_WITH_SOURCE (4) and
    UPDATE_MESSAGE (7) only; a defer (5, 6) gets its type, and 5 the future message's id in
    `interaction.response_message_id`."""
    fake = await FakeDiscord([GUILD]).start()
    try:
        for kind in (4, 5):
            payload = fake.slash_command("imagine", [option("prompt", "x")], user=ALICE, guild=GUILD)
            fake.interactions[payload["token"]] = {
                "id": int(payload["id"]),
                "kind": 2,
                "channel_id": int(payload["channel_id"]),
            }
            status, answer = await discord_call(
                fake,
                "POST",
                f"/interactions/{payload['id']}/{payload['token']}/callback",
                {"type": kind, "data": {"content": "hi"} if kind == 4 else {}},
            )
            assert status == 200 and answer["resource"]["type"] == kind
            assert ("message" in answer["resource"]) == (kind == 4)
            assert answer["interaction"]["response_message_id"]
    finally:
        await fake.stop()


def test_message_components_have_numeric_ids():
    """ActionRowComponentResponse / ButtonComponentResponse: `id` (int32) is required."""
    components = FakeDiscord._numbered(
        [
            {
                "type": 1,
                "components": [{"type": 2, "style": 2, "custom_id": "a"}, {"type": 2, "style": 2, "custom_id": "b"}],
            }
        ]
    )
    ids = [components[0]["id"], *(c["id"] for c in components[0]["components"])]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == 3


async def test_rate_limit_bodies_have_a_code():
    """RatelimitedResponse = Error (code, message required) + retry_after + global."""
    fake = await FakeDiscord([GUILD]).start()
    try:
        fake.rate_limit_next("GET", r"/users/@me")
        status, body = await discord_call(fake, "GET", "/users/@me", {})
        assert status == 429
        assert {"code", "message", "retry_after", "global"} <= body.keys()
    finally:
        await fake.stop()


async def test_slack_chat_update_answers_with_the_message():
    """chat.update answers ok, channel, ts, text and the updated `message`."""
    fake = await FakeSlack().start()
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {BOT_TOKEN}"}) as http:
            async with http.post(f"{fake.api_url}chat.postMessage", data={"channel": "C1", "text": "a"}) as r:
                ts = (await r.json())["ts"]
            async with http.post(f"{fake.api_url}chat.update", data={"channel": "C1", "ts": ts, "text": "b"}) as r:
                answer = await r.json()
        assert answer["ok"] and answer["message"]["text"] == "b" and answer["ts"] == ts
    finally:
        await fake.stop()


async def test_slack_replies_need_the_thread_parent():
    """conversations.replies: `ts` names the thread (its parent); `inclusive` only matters with
    `oldest`/`latest`, which narrow the replies; a reply's own ts names no thread here."""
    fake = await FakeSlack().start()
    try:
        parent = fake.add_message("C1", "U1", "parent")
        first = fake.add_message("C1", "U2", "one", thread_ts=parent.ts)
        second = fake.add_message("C1", "U2", "two", thread_ts=parent.ts)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {BOT_TOKEN}"}) as http:

            async def replies(**params):
                async with http.post(f"{fake.api_url}conversations.replies", data={"channel": "C1", **params}) as r:
                    return await r.json()

            whole = await replies(ts=parent.ts)
            assert [m["ts"] for m in whole["messages"]] == [parent.ts, first.ts, second.ts]
            narrowed = await replies(ts=parent.ts, oldest=second.ts, latest=second.ts, inclusive="true")
            assert [m["ts"] for m in narrowed["messages"]] == [parent.ts, second.ts]
            assert (await replies(ts=second.ts)) == {"ok": False, "error": "thread_not_found"}
    finally:
        await fake.stop()
