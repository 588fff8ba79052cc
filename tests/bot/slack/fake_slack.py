"""A fake Slack on 127.0.0.1: the Web API, the file upload URLs, response_url webhooks, file
downloads and a Socket Mode websocket — enough for the real slack_sdk/slack_bolt code to run
against it. It records every request so tests wait for "the fake received request X", and can be
told to fail a method (429 with Retry-After, 500) a number of times.

Messages' blocks and modals are checked against Block Kit's limits (tests/bot/slack/block_kit.py)
and refused as Slack refuses them: `invalid_blocks`, `invalid_arguments`.

Also: signed-request and payload builders for driving a bolt app over HTTP like Slack does.

    fake = FakeSlack(); await fake.start()
    AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    call = await fake.wait_for("chat.postMessage", lambda c: c.params["channel"] == "C1")
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import WSMsgType, web

from tests.bot.slack.block_kit import check_message_blocks, check_view

BOT_TOKEN = "xoxb-fake-bot-token"
APP_TOKEN = "xapp-fake-app-token"
SIGNING_SECRET = "fake-signing-secret"
TEAM = "T0FAKE"
BOT_USER = "UBOT"


@dataclass
class Call:
    """One request the fake received: the Web API method (or a pseudo-method such as
    `upload`, `response_url`, `download`), its arguments from the query string and the body
    merged, the raw body, when it arrived (time.monotonic()) and the fake's JSON answer."""

    method: str
    params: dict[str, Any]
    body: bytes
    headers: dict[str, str]
    at: float
    response: dict[str, Any] = field(default_factory=dict)  # what a Web API method answered

    def json_param(self, name: str) -> Any:
        value = self.params.get(name)
        return json.loads(value) if isinstance(value, str) else value


@dataclass
class Failure:
    status: int
    times: int
    retry_after: int | None = None
    error: str = "internal_error"


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


class FakeSlack:
    """The fake Slack server. Every handler is on one aiohttp app on a free loopback port."""

    def __init__(self) -> None:
        self.bot_token = BOT_TOKEN
        self.app_token = APP_TOKEN
        self.calls: list[Call] = []
        self.users: dict[str, FakeUser] = {}
        self.usergroups: dict[str, list[str]] = {}  # group id → member user ids
        self.messages: dict[tuple[str, str], FakeMessage] = {}  # (channel, ts) → message
        self.files: dict[str, FakeFile] = {}
        self.failures: dict[str, list[Failure]] = {}
        self.socket_acks: list[dict[str, Any]] = []
        #: The modals views.open opened, as Slack answered them (with `id` and `state`).
        self.views: list[dict[str, Any]] = []
        self._exchanged_triggers: set[str] = set()
        self._view_ids = itertools.count(1)
        #: Seconds each file upload takes (a slow network to files.slack.com).
        self.upload_delay_s = 0.0
        self._changed = asyncio.Condition()
        self._ts = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._sockets: list[web.WebSocketResponse] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, port: int = 0) -> FakeSlack:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_post("/response/{hook}", self._response_url)
        app.router.add_get("/files/{file_id}", self._download)
        app.router.add_get("/socket", self._socket)
        app.router.add_get("/_state", self._state)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        for socket in list(self._sockets):
            await socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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

    def fail(
        self,
        method: str,
        *,
        status: int = 500,
        times: int = 1,
        retry_after: int | None = None,
        error: str = "internal_error",
    ) -> None:
        """Answer the next `times` calls of `method` with `status` (429s carry Retry-After)."""
        self.failures.setdefault(method, []).append(Failure(status, times, retry_after, error))

    # --- waiting ---------------------------------------------------------------------------

    def received(self, method: str, where: Callable[[Call], bool] | None = None) -> list[Call]:
        return [c for c in self.calls if c.method == method and (where is None or where(c))]

    async def wait_for(
        self, method: str, where: Callable[[Call], bool] | None = None, *, count: int = 1, timeout: float = 20.0
    ) -> Call:
        """Wait until `count` matching requests arrived; return the last of them."""

        def enough() -> bool:
            return len(self.received(method, where)) >= count

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(enough), timeout)
            except TimeoutError:
                seen = sorted({c.method for c in self.calls})
                raise AssertionError(
                    f"the fake Slack did not receive {count} x {method} within {timeout} s; it received: {seen}"
                ) from None
        return self.received(method, where)[count - 1]

    async def wait_for_socket_ack(self, envelope_id: str, timeout: float = 20.0) -> dict[str, Any]:
        def acked() -> bool:
            return any(a.get("envelope_id") == envelope_id for a in self.socket_acks)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(acked), timeout)
        return next(a for a in self.socket_acks if a.get("envelope_id") == envelope_id)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- Socket Mode -----------------------------------------------------------------------

    async def wait_for_socket(self, timeout: float = 20.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: bool(self._sockets)), timeout)

    async def send_envelope(self, kind: str, payload: dict[str, Any], *, retry_attempt: int = 0) -> str:
        """Push one Socket Mode envelope (events_api, slash_commands, interactive) to the app."""
        envelope_id = uuid.uuid4().hex
        await self._sockets[-1].send_str(
            json.dumps(
                {
                    "envelope_id": envelope_id,
                    "type": kind,
                    "payload": payload,
                    "accepts_response_payload": kind != "events_api",
                    "retry_attempt": retry_attempt,
                    "retry_reason": "timeout" if retry_attempt else "",
                }
            )
        )
        return envelope_id

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        self._sockets.append(socket)
        await socket.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": 1,
                    "debug_info": {"host": "fake", "approximate_connection_time": 3600},
                    "connection_info": {"app_id": "AFAKE"},
                }
            )
        )
        await self._notify()
        try:
            async for message in socket:
                if message.type == WSMsgType.TEXT:
                    self.socket_acks.append(json.loads(message.data))
                    await self._notify()
        finally:
            self._sockets.remove(socket)
        return socket

    # --- HTTP handlers ---------------------------------------------------------------------

    async def _record(self, method: str, request: web.Request) -> Call:
        body = await request.read()
        params: dict[str, Any] = dict(request.query)
        content_type = request.headers.get("Content-Type", "")
        if body and "application/json" in content_type:
            params.update(json.loads(body))
        elif body and "application/x-www-form-urlencoded" in content_type:
            params.update(dict((await request.post()).items()))
        call = Call(method, params, body, dict(request.headers), time.monotonic())
        self.calls.append(call)
        return call

    def _failure(self, method: str) -> web.Response | None:
        queue = self.failures.get(method)
        if not queue:
            return None
        failure = queue[0]
        failure.times -= 1
        if failure.times <= 0:
            queue.pop(0)
        headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
        error = "ratelimited" if failure.status == 429 else failure.error
        return web.json_response({"ok": False, "error": error}, status=failure.status, headers=headers)

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        call = await self._record(method, request)
        try:
            failed = self._failure(method)
            if failed is not None:
                return failed
            token = request.headers.get("Authorization", "").removeprefix("Bearer ")
            expected = self.app_token if method == "apps.connections.open" else self.bot_token
            if token != expected:
                return web.json_response({"ok": False, "error": "invalid_auth"})
            handler = getattr(self, "_m_" + method.replace(".", "_"), None)
            if handler is None:
                return web.json_response({"ok": False, "error": "unknown_method"})
            try:
                call.response = {"ok": True, **handler(call.params)}
            except _ApiError as error:  # Slack answers API errors with HTTP 200 and ok=false
                call.response = {"ok": False, "error": str(error)}
                if error.messages:  # what exactly was wrong, as Slack says for invalid_blocks & co
                    call.response["response_metadata"] = {"messages": error.messages}
            return web.json_response(call.response)
        finally:
            await self._notify()

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        call = await self._record("upload", request)
        call.params["file_id"] = file_id
        try:
            failed = self._failure("upload")
            if failed is not None:
                return failed
            if file_id not in self.files:
                return web.Response(status=404, text="no such upload")
            if self.upload_delay_s:
                await asyncio.sleep(self.upload_delay_s)
            self.files[file_id].data = call.body
            return web.Response(text=f"OK - {len(call.body)}")
        finally:
            await self._notify()

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

    async def _response_url(self, request: web.Request) -> web.Response:
        call = await self._record("response_url", request)
        call.params["hook"] = request.match_info["hook"]
        try:
            failed = self._failure("response_url")
            return failed if failed is not None else web.Response(text="ok")
        finally:
            await self._notify()

    async def _download(self, request: web.Request) -> web.Response:
        call = await self._record("download", request)
        try:
            file = self.files.get(request.match_info["file_id"])
            if request.headers.get("Authorization") != f"Bearer {self.bot_token}":
                # What files.slack.com does without a valid token: a login page, not the file.
                return web.Response(status=302, headers={"Location": "/signin"})
            if file is None:
                return web.Response(status=404)
            call.params["file_id"] = file.id
            return web.Response(body=file.data, content_type=file.mimetype)
        finally:
            await self._notify()

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


# --- driving a bolt app like Slack does ------------------------------------------------------


def sign(body: str, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack adds to every HTTP request: timestamp and v0 HMAC-SHA256 signature."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def slash_command(
    command: str,
    text: str,
    *,
    user: str,
    channel: str = "C1",
    team: str = TEAM,
    response_url: str = "",
    trigger_id: str = "",
) -> dict[str, str]:
    return {
        "token": "legacy",
        "team_id": team,
        "team_domain": "fake",
        "channel_id": channel,
        "channel_name": "general",
        "user_id": user,
        "user_name": user.lower(),
        "command": command,
        "text": text,
        "api_app_id": "AFAKE",
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id or uuid.uuid4().hex,
    }


def form_body(fields: dict[str, str]) -> str:
    return urlencode(fields)


def block_action(
    action_id: str, value: str, *, user: str, channel: str, message_ts: str, response_url: str, team: str = TEAM
) -> dict[str, str]:
    """The form body of a button press (`payload=<json>`)."""
    payload = {
        "type": "block_actions",
        "api_app_id": "AFAKE",
        "token": "legacy",
        "team": {"id": team, "domain": "fake"},
        "user": {"id": user, "username": user.lower(), "team_id": team},
        "channel": {"id": channel, "name": "general"},
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
        "message": {"type": "message", "ts": message_ts, "user": BOT_USER},
        "response_url": response_url,
        "trigger_id": uuid.uuid4().hex,
        "actions": [
            {"type": "button", "action_id": action_id, "block_id": "b", "value": value, "action_ts": str(time.time())}
        ],
    }
    return {"payload": json.dumps(payload)}


def view_submission(
    view: dict[str, Any],
    answers: dict[str, str | None],
    *,
    user: str,
    team: str = TEAM,
    values: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The form body of a submitted modal (`payload=<json>`): `view` as views.open opened it (its
    callback_id and private_metadata come back as they were), with `state.values` as Slack fills
    them in — every input block, `{block_id: {action_id: state}}`: a static_select's
    `selected_option` (null when nothing is chosen), a plain_text_input's `value` (null when
    empty). `answers` by block id; `values` replaces the state outright (a forged one)."""
    if values is None:
        values = {}
        for block in view.get("blocks", []):
            if block.get("type") != "input":
                continue
            element, answer = block["element"], answers.get(block["block_id"])
            if element["type"] == "static_select":
                chosen = next((o for o in element["options"] if o["value"] == answer), None)
                state = {"type": "static_select", "selected_option": chosen}
            else:
                state = {"type": element["type"], "value": answer or None}
            values[block["block_id"]] = {element["action_id"]: state}
    payload = {
        "type": "view_submission",
        "team": {"id": team, "domain": "fake"},
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": team},
        "api_app_id": "AFAKE",
        "token": "legacy",
        "trigger_id": uuid.uuid4().hex,
        "view": {**view, "state": {"values": values}},
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }
    return {"payload": json.dumps(payload)}


def reaction_event(
    reaction: str,
    *,
    user: str,
    channel: str,
    ts: str,
    event_id: str | None = None,
    team: str = TEAM,
    item_user: str = BOT_USER,
) -> dict[str, Any]:
    """An Events API body: `user` reacted to the message `ts` that `item_user` posted."""
    return {
        "token": "legacy",
        "team_id": team,
        "api_app_id": "AFAKE",
        "type": "event_callback",
        "event_id": event_id or "Ev" + uuid.uuid4().hex[:10].upper(),
        "event_time": int(time.time()),
        "event": {
            "type": "reaction_added",
            "user": user,
            "reaction": reaction,
            "item": {"type": "message", "channel": channel, "ts": ts},
            "item_user": item_user,
            "event_ts": f"{time.time():.6f}",
        },
        "authorizations": [{"team_id": team, "user_id": BOT_USER, "is_bot": True}],
    }
