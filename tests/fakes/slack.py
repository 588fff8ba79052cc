"""A fake Slack on 127.0.0.1: the Web API, the file upload URLs, response_url webhooks, file
downloads and a Socket Mode websocket — enough for the real slack_sdk/slack_bolt code to run
against it. Its methods take the arguments and give the answers of Slack's Web API reference
(docs.slack.dev/reference/methods), errors included (`{"ok": false, "error": ...}` with HTTP 200),
and Socket Mode speaks as Slack's Socket Mode guide says (hello, envelopes, acks).

It records every request (tests/fakes/recording.py), so tests wait for "the fake received
request X", and can be told to fail a method (429 with Retry-After, 500, an API error) a number
of times. Messages' blocks and modals are checked against Block Kit's limits
(tests/fakes/block_kit.py) and refused as Slack refuses them: `invalid_blocks`,
`invalid_arguments`. What Slack sends the app is built in tests/fakes/slack_requests.py.

    fake = await FakeSlack().start()
    AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    call = await fake.wait_for("chat.postMessage", where=lambda c: c.params["channel"] == "C1")
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.block_kit import check_message_blocks, check_view
from tests.fakes.recording import DEFAULT_TIMEOUT_S, Call, RecordingServer, json_frames

BOT_TOKEN = "xoxb-fake-bot-token"
APP_TOKEN = "xapp-fake-app-token"
TEAM = "T0FAKE"
BOT_USER = "UBOT"


@dataclass
class SlackCall(Call):
    """One request the fake received: `method` is the Web API method, or a pseudo-method for
    the other URLs (`upload`, `response_url`, `download`); `params` its arguments from the query
    string and the body merged; `body` the raw body; `response` the fake's JSON answer."""

    params: dict[str, Any]
    body: bytes
    response: dict[str, Any] = field(default_factory=dict)  # what a Web API method answered

    def json_param(self, name: str) -> Any:
        value = self.params.get(name)
        return json.loads(value) if isinstance(value, str) else value


@dataclass
class FakeUser:
    id: str
    name: str
    is_admin: bool = False
    is_owner: bool = False
    team_id: str = TEAM


@dataclass
class FakeFile:
    id: str
    name: str
    data: bytes = b""
    mimetype: str = "image/png"
    title: str = ""
    user: str = BOT_USER
    shares: dict[str, str] = field(default_factory=dict)  # channel → ts of the share message
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass
class FakeMessage:
    channel: str
    ts: str
    user: str
    text: str = ""
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    files: list[str] = field(default_factory=list)  # file ids
    metadata: dict[str, Any] | None = None  # chat.postMessage's message metadata


class FakeSlack(RecordingServer[SlackCall]):
    """The fake Slack server: every handler on one aiohttp app on a free loopback port."""

    name = "Slack"

    def __init__(self) -> None:
        super().__init__()
        self.bot_token = BOT_TOKEN
        self.app_token = APP_TOKEN
        self.users: dict[str, FakeUser] = {}
        self.usergroups: dict[str, list[str]] = {}  # group id → member user ids
        self.messages: dict[tuple[str, str], FakeMessage] = {}  # (channel, ts) → message
        self.files: dict[str, FakeFile] = {}
        self.socket_acks: list[dict[str, Any]] = []
        #: The modals views.open opened, as Slack answered them (with `id` and `state`).
        self.views: list[dict[str, Any]] = []
        self._exchanged_triggers: set[str] = set()
        self._view_ids = itertools.count(1)
        #: Seconds each file upload takes (a slow network to files.slack.com).
        self.upload_delay_s = 0.0
        self._ts = itertools.count(1)
        self._file_ids = itertools.count(1)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.route("*", "/api/{method}", self._api),
            web.post("/upload/{file_id}", self._upload),
            web.post("/response/{hook}", self._response_url),
            web.get("/files/{file_id}", self._download),
            web.get("/socket", self._socket),
            web.get("/_state", self._state),
        ]

    @property
    def api_url(self) -> str:
        # slack_sdk joins method names onto this: the trailing slash matters.
        return f"{self.base_url}/api/"

    def response_url(self, name: str | None = None) -> str:
        return f"{self.base_url}/response/{name or uuid.uuid4().hex}"

    # --- test set-up -----------------------------------------------------------------------

    def add_user(self, user_id: str, name: str, *, admin: bool = False, owner: bool = False) -> FakeUser:
        self.users[user_id] = FakeUser(user_id, name, is_admin=admin, is_owner=owner)
        return self.users[user_id]

    def add_usergroup(self, group_id: str, members: list[str]) -> None:
        self.usergroups[group_id] = list(members)

    def add_file_message(
        self,
        channel: str,
        user: str,
        data: bytes,
        name: str = "photo.png",
        mimetype: str = "image/png",
        thread_ts: str | None = None,
    ) -> FakeMessage:
        """A message a person posted with one file attached (what a channel upload looks like),
        in a thread when `thread_ts` is given."""
        file = FakeFile(self._new_file_id(), name, data, mimetype, name, user)
        self.files[file.id] = file
        return self._store_message(channel, user, "", [], thread_ts, [file.id])

    def add_message(self, channel: str, user: str, text: str, thread_ts: str | None = None) -> FakeMessage:
        """A plain message a person posted (in a thread when `thread_ts` is given)."""
        return self._store_message(channel, user, text, [], thread_ts, [])

    # --- what the app did ------------------------------------------------------------------

    def describe(self, call: SlackCall) -> str:
        return f"{call.method} {str(call.params)[:300]}"

    # --- misbehaving -----------------------------------------------------------------------

    def error_body(self, status: int) -> Any:
        return {"ok": False, "error": "ratelimited" if status == 429 else "internal_error"}

    def fail(
        self,
        method: str,
        path: str | None = None,
        *,
        status: int = 500,
        body: Any = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
        after_effect: bool = False,
        retry_after: int | None = None,
        error: str | None = None,
    ) -> None:
        """As RecordingServer.fail, with Slack's two knobs: `error`, the code of the answer
        `{"ok": false, "error": ...}` (Slack answers most API errors with HTTP 200), and
        `retry_after`, the Retry-After header its 429s carry."""
        if error is not None:
            body = {"ok": False, "error": error}
        if retry_after is not None:
            headers = {**(headers or {}), "Retry-After": str(retry_after)}
        super().fail(method, path, status=status, body=body, headers=headers, times=times, after_effect=after_effect)

    # --- Socket Mode -----------------------------------------------------------------------

    async def wait_for_socket(self, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        await self.wait_until(lambda: bool(self.sockets), timeout)

    async def wait_for_socket_ack(self, envelope_id: str, timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
        def acked() -> bool:
            return any(a.get("envelope_id") == envelope_id for a in self.socket_acks)

        await self.wait_until(acked, timeout)
        return next(a for a in self.socket_acks if a.get("envelope_id") == envelope_id)

    async def send_envelope(self, kind: str, payload: dict[str, Any], *, retry_attempt: int = 0) -> str:
        """Push one Socket Mode envelope (events_api, slash_commands, interactive) to the app,
        on its newest connection."""
        envelope_id = uuid.uuid4().hex
        await self.sockets[-1].send_json(
            {
                "envelope_id": envelope_id,
                "type": kind,
                "payload": payload,
                "accepts_response_payload": kind != "events_api",
                "retry_attempt": retry_attempt,
                "retry_reason": "timeout" if retry_attempt else "",
            }
        )
        return envelope_id

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        hello = {
            "type": "hello",
            "num_connections": 1,
            "debug_info": {"host": "fake", "approximate_connection_time": 3600},
            "connection_info": {"app_id": "AFAKE"},
        }
        async with self.websocket(request, hello) as socket:
            async for ack in json_frames(socket):
                self.socket_acks.append(ack)
                await self.notify()
        return socket

    # --- HTTP handlers ---------------------------------------------------------------------

    async def _read_call(self, method: str, request: web.Request) -> SlackCall:
        body = await request.read()
        params: dict[str, Any] = dict(request.query)
        content_type = request.headers.get("Content-Type", "")
        if body and "application/json" in content_type:
            params.update(json.loads(body))
        elif body and "application/x-www-form-urlencoded" in content_type:
            params.update(dict((await request.post()).items()))
        return SlackCall(method, request.path, dict(request.headers), params=params, body=body)

    async def _api(self, request: web.Request) -> web.StreamResponse:
        call = await self._read_call(request.match_info["method"], request)
        return await self.serve(call, self._answer_api)

    async def _answer_api(self, call: SlackCall) -> web.Response:
        token = call.headers.get("Authorization", "").removeprefix("Bearer ")
        expected = self.app_token if call.method == "apps.connections.open" else self.bot_token
        if token != expected:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        handler = getattr(self, "_m_" + call.method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        try:
            call.response = {"ok": True, **handler(call.params)}
        except _ApiError as error:  # Slack answers API errors with HTTP 200 and ok=false
            call.response = {"ok": False, "error": str(error)}
            if error.messages:  # what exactly was wrong, as Slack says for invalid_blocks & co
                call.response["response_metadata"] = {"messages": error.messages}
        return web.json_response(call.response)

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        call = await self._read_call("upload", request)
        call.params["file_id"] = request.match_info["file_id"]
        return await self.serve(call, self._answer_upload)

    async def _answer_upload(self, call: SlackCall) -> web.Response:
        file = self.files.get(call.params["file_id"])
        if file is None:
            return web.Response(status=404, text="no such upload")
        if self.upload_delay_s:
            await asyncio.sleep(self.upload_delay_s)
        file.data = call.body
        return web.Response(text=f"OK - {len(call.body)}")

    async def _response_url(self, request: web.Request) -> web.StreamResponse:
        call = await self._read_call("response_url", request)
        call.params["hook"] = request.match_info["hook"]
        return await self.serve(call, self._answer_response_url)

    async def _answer_response_url(self, call: SlackCall) -> web.Response:
        return web.Response(text="ok")

    async def _download(self, request: web.Request) -> web.StreamResponse:
        call = await self._read_call("download", request)
        call.params["file_id"] = request.match_info["file_id"]
        return await self.serve(call, self._answer_download)

    async def _answer_download(self, call: SlackCall) -> web.Response:
        file = self.files.get(call.params["file_id"])
        if call.headers.get("Authorization") != f"Bearer {self.bot_token}":
            # What files.slack.com does without a valid token: a login page, not the file.
            return web.Response(status=302, headers={"Location": "/signin"})
        if file is None:
            return web.Response(status=404)
        return web.Response(body=file.data, content_type=file.mimetype)

    async def _state(self, request: web.Request) -> web.Response:
        """Not Slack: what the fake holds now, for a benchmark in another process to audit —
        messages (with metadata), files and their shares, and the response_url answers."""
        return web.json_response(
            {
                "messages": [
                    {
                        "channel": m.channel,
                        "ts": m.ts,
                        "text": m.text,
                        "thread_ts": m.thread_ts,
                        "metadata": m.metadata,
                        "files": m.files,
                    }
                    for m in self.messages.values()
                ],
                "files": [
                    {"id": f.id, "name": f.name, "shares": f.shares, "complete": bool(f.data)}
                    for f in self.files.values()
                ],
                "responses": [
                    {"hook": c.params.get("hook"), "text": c.params.get("text")}
                    for c in self.calls
                    if c.method == "response_url"
                ],
            }
        )

    # --- Web API methods -------------------------------------------------------------------

    def _new_ts(self) -> str:
        # Like Slack's: the posting time in seconds, with a counter keeping every ts unique.
        n = next(self._ts)
        return f"{int(time.time())}.{n:06d}"

    def _new_file_id(self) -> str:
        return f"F{next(self._file_ids):07d}"

    def _store_message(
        self, channel: str, user: str, text: str, blocks: list, thread_ts: str | None, files: list[str]
    ) -> FakeMessage:
        message = FakeMessage(channel, self._new_ts(), user, text, blocks, thread_ts, files)
        self.messages[(channel, message.ts)] = message
        return message

    def _message_json(self, message: FakeMessage, *, metadata: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": "message",
            "ts": message.ts,
            "user": message.user,
            "text": message.text,
            "blocks": message.blocks,
        }
        if metadata and message.metadata:
            data["metadata"] = message.metadata  # only with include_all_metadata, as Slack does
        if message.thread_ts:
            data["thread_ts"] = message.thread_ts
        replies = [
            m.ts
            for (c, _), m in self.messages.items()
            if c == message.channel and m.thread_ts == message.ts and m.ts != message.ts
        ]
        if replies:  # a thread's parent says how many replies and the latest one's ts
            data.update(thread_ts=message.ts, reply_count=len(replies), latest_reply=max(replies, key=float))
        if message.files:
            data["files"] = [self._file_json(self.files[f]) for f in message.files if f in self.files]
        return data

    def _file_json(self, file: FakeFile) -> dict[str, Any]:
        return {
            "id": file.id,
            "name": file.name,
            "title": file.title,
            "mimetype": file.mimetype,
            "size": len(file.data),
            "user": file.user,
            "url_private": f"{self.base_url}/files/{file.id}",
            "url_private_download": f"{self.base_url}/files/{file.id}?download=1",
        }

    def _m_auth_test(self, params):
        return {
            "url": "https://fake.slack.com/",
            "team": "Fake",
            "user": "imagine",
            "team_id": TEAM,
            "user_id": BOT_USER,
            "bot_id": "BFAKE",
        }

    def _m_apps_connections_open(self, params):
        return {"url": f"ws://127.0.0.1:{self.port}/socket"}

    def _m_users_info(self, params):
        user = self.users.get(params.get("user", ""))
        if user is None:
            raise _ApiError("user_not_found")
        return {
            "user": {
                "id": user.id,
                "team_id": user.team_id,
                "name": user.name.lower(),
                "real_name": user.name,
                "is_admin": user.is_admin,
                "is_owner": user.is_owner,
                "is_primary_owner": False,
                "is_bot": False,
                "profile": {"display_name": user.name, "real_name": user.name},
            }
        }

    def _m_usergroups_list(self, params):
        include = str(params.get("include_users", "")).lower() in ("1", "true")
        groups = []
        for group_id, members in self.usergroups.items():
            group = {"id": group_id, "team_id": TEAM, "handle": group_id.lower(), "name": group_id}
            if include:
                group["users"] = list(members)
            groups.append(group)
        return {"usergroups": groups}

    def _m_chat_postMessage(self, params):
        channel = params["channel"]
        blocks = _checked_blocks(params.get("blocks"))
        message = self._store_message(channel, BOT_USER, params.get("text", ""), blocks, params.get("thread_ts"), [])
        metadata = params.get("metadata")
        message.metadata = json.loads(metadata) if isinstance(metadata, str) else metadata
        return {"channel": channel, "ts": message.ts, "message": self._message_json(message)}

    def _m_chat_update(self, params):
        message = self.messages.get((params["channel"], params["ts"]))
        if message is None:
            raise _ApiError("message_not_found")
        message.text = params.get("text", message.text)
        message.blocks = _checked_blocks(params.get("blocks"))
        return {
            "channel": message.channel,
            "ts": message.ts,
            "text": message.text,
            "message": self._message_json(message),
        }

    def _m_chat_delete(self, params):
        if self.messages.pop((params["channel"], params["ts"]), None) is None:
            raise _ApiError("message_not_found")
        return {"channel": params["channel"], "ts": params["ts"]}

    def _m_chat_postEphemeral(self, params):
        return {"message_ts": self._new_ts()}

    def _m_views_open(self, params):
        """Opens a modal for the user whose interaction gave the trigger_id: each trigger works
        once (Slack also lets it expire after 3 s; the fake does not), and the view must be a
        valid modal."""
        trigger = params.get("trigger_id") or params.get("interactivity_pointer")
        if not trigger:
            raise _ApiError("invalid_arguments", ["[ERROR] missing required field: trigger_id"])
        if trigger in self._exchanged_triggers:
            raise _ApiError("exchanged_trigger_id")
        view = params.get("view")
        try:
            view = json.loads(view) if isinstance(view, str) else view
        except ValueError:
            raise _ApiError("invalid_arguments", ["[ERROR] must be a JSON object [json-pointer:/view]"]) from None
        problems = check_view(view)
        if problems:
            raise _ApiError("invalid_arguments", problems)
        self._exchanged_triggers.add(trigger)
        view_id = f"V{next(self._view_ids):08d}"
        opened = {
            **view,
            "id": view_id,
            "team_id": TEAM,
            "state": {"values": {}},
            "hash": uuid.uuid4().hex,
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "root_view_id": view_id,
            "previous_view_id": None,
            "app_id": "AFAKE",
            "bot_id": "BFAKE",
        }
        self.views.append(opened)
        return {"view": opened}

    def _m_conversations_join(self, params):
        return {"channel": {"id": params.get("channel")}}

    def _m_conversations_history(self, params):
        """Top-level messages only (a thread's replies are not in a channel's history), newest
        first, within latest/oldest (each inclusive only with `inclusive`), as Slack answers."""
        channel = params["channel"]
        inclusive = _flag(params.get("inclusive"))
        found = [
            m
            for (c, ts), m in self.messages.items()
            if c == channel and m.thread_ts in (None, ts) and _in_window(ts, params, inclusive)
        ]
        found.sort(key=lambda m: float(m.ts), reverse=True)
        metadata = _flag(params.get("include_all_metadata"))
        limit = int(params.get("limit", 100))
        return {
            "messages": [self._message_json(m, metadata=metadata) for m in found[:limit]],
            "has_more": len(found) > limit,
        }

    def _m_conversations_replies(self, params):
        """A thread: its parent first, then the replies within latest/oldest. `ts` must be an
        existing message's; a reply's ts names no thread here (the parent's must be given)."""
        channel, ts = params["channel"], params["ts"]
        parent = self.messages.get((channel, ts))
        if parent is None or (parent.thread_ts not in (None, ts)):
            raise _ApiError("thread_not_found")
        inclusive = _flag(params.get("inclusive"))
        replies = sorted(
            (
                m
                for (c, mts), m in self.messages.items()
                if c == channel and m.thread_ts == ts and mts != ts and _in_window(mts, params, inclusive)
            ),
            key=lambda m: float(m.ts),
        )
        metadata = _flag(params.get("include_all_metadata"))
        limit = int(params.get("limit", 1000))
        found = [parent, *replies][:limit]
        return {
            "messages": [self._message_json(m, metadata=metadata) for m in found],
            "has_more": len(replies) + 1 > limit,
        }

    def _m_files_list(self, params):
        channel = params.get("channel")
        since = int(params.get("ts_from") or 0)
        found = [
            f for f in self.files.values() if f.data and (channel is None or channel in f.shares) and f.created >= since
        ]
        return {
            "files": [self._file_json(f) for f in found][: int(params.get("count", 100))],
            "paging": {"count": int(params.get("count", 100)), "total": len(found), "page": 1, "pages": 1},
        }

    def _m_files_getUploadURLExternal(self, params):
        file = FakeFile(self._new_file_id(), params["filename"])
        file.expected_length = int(params["length"])  # type: ignore[attr-defined]
        self.files[file.id] = file
        return {"upload_url": f"{self.base_url}/upload/{file.id}", "file_id": file.id}

    def _m_files_completeUploadExternal(self, params):
        entries = json.loads(params["files"])
        shared = []
        for entry in entries:
            file = self.files.get(entry["id"])
            if file is None or not file.data:
                raise _ApiError("file_not_found")
            file.title = entry.get("title") or file.name
            shared.append(file)
        channel = params.get("channel_id")
        if channel:
            message = self._store_message(
                channel,
                BOT_USER,
                params.get("initial_comment", ""),
                _blocks(params.get("blocks")),
                params.get("thread_ts"),
                [f.id for f in shared],
            )
            for file in shared:
                file.shares[channel] = message.ts
        return {"files": [{"id": f.id, "title": f.title} for f in shared]}

    def _m_files_info(self, params):
        file = self.files.get(params.get("file", ""))
        if file is None:
            raise _ApiError("file_not_found")
        shares = {channel: [{"ts": ts, "channel_name": "general"}] for channel, ts in file.shares.items()}
        return {"file": {**self._file_json(file), "shares": {"public": shares} if shares else {}}}

    def _m_files_delete(self, params):
        file_id = params.get("file")
        if self.files.pop(file_id, None) is None:
            raise _ApiError("file_not_found")
        for key, message in list(self.messages.items()):
            if file_id in message.files:
                del self.messages[key]
        return {}


def _in_window(ts: str, params: dict[str, Any], inclusive: bool) -> bool:
    """Whether a message's ts is within `oldest`/`latest` (ends only with `inclusive`)."""
    value = float(ts)
    if params.get("latest") not in (None, ""):
        latest = float(params["latest"])
        if value > latest or (value == latest and not inclusive):
            return False
    if params.get("oldest") not in (None, ""):
        oldest = float(params["oldest"])
        if value < oldest or (value == oldest and not inclusive):
            return False
    return True


def _flag(value: Any) -> bool:
    return str(value).lower() in ("1", "true")


class _ApiError(Exception):
    """A Web API method's `{"ok": false, "error": ...}` answer, with `response_metadata.messages`
    when Slack says more."""

    def __init__(self, error: str, messages: list[str] | None = None) -> None:
        super().__init__(error)
        self.messages = messages or []


def _blocks(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return json.loads(value)
    return list(value or [])


def _checked_blocks(value: Any) -> list[dict[str, Any]]:
    """A message's blocks, refused as Slack refuses them when they break Block Kit's limits."""
    blocks = _blocks(value)
    problems = check_message_blocks(blocks)
    if problems:
        raise _ApiError("invalid_blocks", problems)
    return blocks
