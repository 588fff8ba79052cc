"""The fakes answer as the platforms' published API references say (discord/discord-api-spec
`specs/openapi.json`; Slack's method reference), for the calls the bot makes — so a change that
relies on a field the real API does not send fails here, not in production. And the recording
base they share (tests/fakes/recording.py) does what every test leans on: it records, wakes a
waiter, and fails on purpose exactly as often as told."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest
from aiohttp import web

from tests.bot.discord.conftest import ALICE, GUILD
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord_model import option
from tests.fakes.recording import Call, RecordingServer, json_response
from tests.fakes.slack import BOT_TOKEN, FakeSlack


class Echo(RecordingServer[Call]):
    """The smallest platform on the base: every request is recorded and answered with its path."""

    name = "Echo"

    def routes(self) -> list[web.RouteDef]:
        return [web.route("*", "/{tail:.*}", self._any)]

    async def _any(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(Call(request.method, request.path, dict(request.headers)), self._answer)

    async def _answer(self, call: Call) -> web.Response:
        return json_response({"path": call.path})

    def error_body(self, status: int) -> dict:
        return {"error": status}


async def echo(http: aiohttp.ClientSession, fake: Echo, method: str, path: str) -> tuple[int, dict, str | None]:
    async with http.request(method, fake.base_url + path) as response:
        return response.status, await response.json(), response.headers.get("Retry-After")


async def test_the_base_records_every_call_and_looks_after_a_mark():
    fake = await Echo().start()
    try:
        async with aiohttp.ClientSession() as http:
            await echo(http, fake, "GET", "/a/1")
            await echo(http, fake, "POST", "/b")
            mark = fake.mark()
            await echo(http, fake, "GET", "/a/2")
        assert [(c.method, c.path, c.answered) for c in fake.calls] == [
            ("GET", "/a/1", True),
            ("POST", "/b", True),
            ("GET", "/a/2", True),
        ]
        assert [c.path for c in fake.received("GET", r"/a/\d+")] == ["/a/1", "/a/2"]
        assert [c.path for c in fake.received("GET", r"/a/\d+", since=mark)] == ["/a/2"]
        assert fake.received("GET", "/a") == []  # the path must match whole
        assert [c.path for c in fake.received("GET", where=lambda c: c.path.endswith("1"))] == ["/a/1"]
        with pytest.raises(TypeError, match="where="):  # a predicate is not a path
            fake.received("GET", lambda c: True)  # type: ignore[arg-type]
    finally:
        await fake.stop()


async def test_wait_for_wakes_on_a_matching_call_and_otherwise_says_what_came():
    fake = await Echo().start()
    try:
        async with aiohttp.ClientSession() as http:
            waiting = asyncio.create_task(fake.wait_for("POST", "/late"))
            await echo(http, fake, "GET", "/early")
            assert not waiting.done()  # woken by the GET, it went back to waiting
            await echo(http, fake, "POST", "/late")
            call = await asyncio.wait_for(waiting, 5)
        assert (call.method, call.path, call.answered) == ("POST", "/late", True)
        expected = "the fake Echo never received 1 × DELETE /never within 0.2 s; it got:\n  GET /early\n  POST /late"
        with pytest.raises(AssertionError, match=re.escape(expected)):
            await fake.wait_for("DELETE", "/never", timeout=0.2)
    finally:
        await fake.stop()


async def test_fail_answers_the_canned_error_exactly_n_times():
    fake = await Echo().start()
    try:
        fake.fail("GET", r"/x/\d+", status=503, headers={"Retry-After": "1"}, times=2)
        async with aiohttp.ClientSession() as http:
            other = await echo(http, fake, "GET", "/y")
            answers = [await echo(http, fake, "GET", f"/x/{i}") for i in range(3)]
        assert other == (200, {"path": "/y"}, None)  # another path is not failed
        assert answers == [(503, {"error": 503}, "1"), (503, {"error": 503}, "1"), (200, {"path": "/x/2"}, None)]
        assert len(fake.received("GET", r"/x/\d+")) == 3  # failed calls are recorded too
    finally:
        await fake.stop()


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
