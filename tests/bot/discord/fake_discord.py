"""A fake Discord on 127.0.0.1: the REST API, the CDN and the gateway, for tests and benchmarks.

The real discord.py client talks to it (`FakeDiscord.install` points `Route.BASE` and
`DiscordWebSocket.DEFAULT_GATEWAY` here). It keeps what imagine-bot needs the way Discord does:
interaction responses and their tokens, channel messages (with `nonce` + `enforce_nonce`),
threads started from messages, DM channels and uploaded files; it records every request, and it
can misbehave on purpose: 429 with or without `Via`, 5xx before or after the effect (a response
lost on its way back), expired interaction tokens.

Events reach the bot through the gateway, as raw payloads (`dispatch`); the builders
(`slash_command`, `click`, `reaction`) write those payloads the way Discord sends them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1420070400000
APPLICATION_ID = 1100000000000000001
BOT_USER_ID = 1100000000000000002
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024

MANAGE_GUILD = 1 << 5
ADMINISTRATOR = 1 << 3
BASIC_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 6)  # view channel, send messages, add reactions

_counter = itertools.count(1)


def snowflake(at: float | None = None) -> int:
    """A Discord id whose timestamp is `at` (seconds since the Unix epoch; now by default)."""
    ms = int((time.time() if at is None else at) * 1000) - DISCORD_EPOCH_MS
    return (ms << 22) | (next(_counter) & 0x3FFFFF)


def iso_now() -> str:
    return datetime.now(UTC).isoformat()


def user_payload(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name,
        "global_name": name,
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
    }


@dataclass
class FakeUser:
    id: int
    name: str
    roles: tuple[int, ...] = ()
    permissions: int = BASIC_PERMISSIONS

    def payload(self) -> dict[str, Any]:
        return user_payload(self.id, self.name)

    def member(self) -> dict[str, Any]:
        return {
            "user": self.payload(),
            "roles": [str(r) for r in self.roles],
            "nick": None,
            "avatar": None,
            "joined_at": iso_now(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "permissions": str(self.permissions),
        }


@dataclass
class FakeGuild:
    id: int
    name: str
    owner_id: int
    channel_id: int  # its one text channel
    roles: dict[int, tuple[str, int]] = field(default_factory=dict)  # id → (name, permissions)

    def role_payloads(self) -> list[dict[str, Any]]:
        everyone = {self.id: ("@everyone", BASIC_PERMISSIONS)}
        return [
            {
                "id": str(rid),
                "name": name,
                "permissions": str(perms),
                "position": i,
                "color": 0,
                "hoist": False,
                "managed": False,
                "mentionable": True,
                "flags": 0,
            }
            for i, (rid, (name, perms)) in enumerate({**everyone, **self.roles}.items())
        ]

    def channel_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.channel_id),
            "type": 0,
            "guild_id": str(self.id),
            "name": "general",
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
        }

    def create_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "owner_id": str(self.owner_id),
            "icon": None,
            "roles": self.role_payloads(),
            "channels": [self.channel_payload()],
            "threads": [],
            "members": [],
            "emojis": [],
            "stickers": [],
            "features": [],
            "member_count": 3,
            "large": False,
            "unavailable": False,
            "premium_tier": 0,
            "mfa_level": 0,
            "verification_level": 0,
            "explicit_content_filter": 0,
            "default_message_notifications": 0,
            "preferred_locale": "en-US",
            "system_channel_id": None,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "joined_at": iso_now(),
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }


@dataclass
class Request:
    """One request the bot made, as the fake saw it."""

    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    json: Any  # the JSON body, or a multipart request's payload_json
    files: list[tuple[str, bytes]]
    headers: dict[str, str]
    at: float  # time.perf_counter() when it arrived
    answered: bool = False  # the fake has done what it asked and answered

    @property
    def body(self) -> dict[str, Any]:
        return self.json if isinstance(self.json, dict) else {}

    @property
    def content(self) -> str | None:
        body = self.body.get("data", self.body) if self.path.endswith("/callback") else self.body
        return body.get("content") if isinstance(body, dict) else None

    def custom_ids(self) -> list[str]:
        body = self.body.get("data", self.body) if self.path.endswith("/callback") else self.body
        return custom_ids(body.get("components") or [])


def custom_ids(components: list[dict[str, Any]]) -> list[str]:
    found = []
    for component in components:
        if "custom_id" in component:
            found.append(component["custom_id"])
        found.extend(custom_ids(component.get("components") or []))
    return found


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: Any
    headers: dict[str, str]
    after_effect: bool
    remaining: int


class DiscordError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py parses JSON only when Content-Type is exactly application/json (no charset).
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json", **(headers or {})}
    )


class FakeDiscord:
    """Discord's REST API, CDN and gateway on one loopback port."""

    def __init__(
        self,
        guilds: Iterable[FakeGuild] = (),
        *,
        shard_count: int = 1,
        max_concurrency: int = 16,
        guild_limit: int = 2500,
    ) -> None:
        self.guilds = {g.id: g for g in guilds}
        #: What /gateway/bot recommends; an unsharded IDENTIFY with more guilds than
        #: `guild_limit` is closed with 4011, as Discord does past 2,500 guilds.
        self.shard_count = shard_count
        self.max_concurrency = max_concurrency
        self.guild_limit = guild_limit
        #: (shard id, shard count, time.monotonic()) of every IDENTIFY, in order.
        self.identified_shards: list[tuple[int, int, float]] = []
        self._shard_of_socket: dict[web.WebSocketResponse, tuple[int, int]] = {}
        #: Events for a shard no client runs right now: sent when one identifies for it.
        self._held: list[tuple[str, dict[str, Any]]] = []
        self.bot = user_payload(BOT_USER_ID, "imagine-bot", bot=True)
        self.requests: list[Request] = []
        self.messages: dict[int, dict[str, Any]] = {}
        self.deleted: set[int] = set()
        self.files: dict[int, bytes] = {}
        self.threads: dict[int, dict[str, Any]] = {}  # thread id (= its starter message id) → channel
        self.dm_channels: dict[int, int] = {}  # user id → DM channel id
        self.interactions: dict[str, dict[str, Any]] = {}  # token → what the interaction was
        self.expired_tokens: set[str] = set()
        self.identifies: list[dict[str, Any]] = []
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self._nonces: dict[tuple[int, str], int] = {}
        self._faults: list[Fault] = []
        self._pauses: list[tuple[str, re.Pattern[str], asyncio.Event]] = []
        #: Called with every request as it arrives (a benchmark uses it to feed on acknowledgements).
        self.on_request: Callable[[Request], None] | None = None
        self._changed = asyncio.Condition()
        self._sockets: list[web.WebSocketResponse] = []
        self._sequence = 0
        self._identified = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, extra_routes: Iterable[web.RouteDef] = ()) -> FakeDiscord:
        """Serve on a free loopback port (`extra_routes`: e.g. a benchmark's control endpoints)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_routes(list(extra_routes))
        app.router.add_get("/", self._gateway)
        app.router.add_get("/attachments/{file_id}/{name}", self._cdn)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._api)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def install(self, monkeypatch) -> None:
        """Point discord.py's REST base and gateway here for the rest of the test."""
        import yarl
        from discord.gateway import DiscordWebSocket
        from discord.http import Route

        monkeypatch.setattr(Route, "BASE", self.base_url + API_PREFIX)
        monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(f"ws://127.0.0.1:{self.port}/"))

    # --- what the bot did -------------------------------------------------------------------

    def mark(self) -> int:
        """A position in the request log: `wait_for(..., since=mark)` looks only after it."""
        return len(self.requests)

    def find(
        self,
        method: str,
        pattern: str,
        where: Callable[[Request], bool] | None = None,
        since: int = 0,
        *,
        arrived: bool = False,
    ) -> list[Request]:
        """Matching requests after `since` that were answered (or only arrived, if asked)."""
        regex = re.compile(pattern)
        return [
            r
            for r in self.requests[since:]
            if r.method == method
            and regex.fullmatch(r.path)
            and (arrived or r.answered)
            and (where is None or where(r))
        ]

    async def wait_for(
        self,
        method: str,
        pattern: str,
        where: Callable[[Request], bool] | None = None,
        *,
        since: int = 0,
        count: int = 1,
        timeout: float = 15.0,
        arrived: bool = False,
    ) -> Request:
        """Wait until `count` matching requests were answered (or arrived) after `since`; return
        the last of them."""

        def enough() -> bool:
            return len(self.find(method, pattern, where, since, arrived=arrived)) >= count

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(enough), timeout)
            except TimeoutError:
                seen = "\n".join(f"  {r.method} {r.path} {str(r.json)[:300]}" for r in self.requests[since:])
                raise AssertionError(
                    f"the fake Discord never received {count} × {method} {pattern}; it got:\n{seen}"
                ) from None
        return self.find(method, pattern, where, since, arrived=arrived)[count - 1]

    async def wait_until(self, check: Callable[[], bool], timeout: float = 15.0) -> None:
        """Wait until `check()` holds (evaluated after every request)."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(check), timeout)

    def channel_messages(self, channel_id: int) -> list[dict[str, Any]]:
        return [m for m in self.messages.values() if int(m["channel_id"]) == channel_id]

    def original(self, token: str) -> dict[str, Any] | None:
        mid = self.interactions.get(token, {}).get("original")
        return self.messages.get(mid) if mid else None

    # --- misbehaving ------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        pattern: str,
        status: int,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        after_effect: bool = False,
        times: int = 1,
    ) -> None:
        """Answer the next `times` matching requests with `status` (after doing them, if asked)."""
        self._faults.append(
            Fault(
                method,
                re.compile(pattern),
                status,
                body if body is not None else {"message": "fake failure", "code": 0},
                headers or {},
                after_effect,
                times,
            )
        )

    def rate_limit_next(self, method: str, pattern: str, *, retry_after: float = 0.05, via: bool = True) -> None:
        """A 429 as Discord sends it (with `Via`), or as Cloudflare's ban looks (without)."""
        headers = {"Via": "1.1 google"} if via else {}
        self.fail_next(
            method,
            pattern,
            429,
            {"message": "You are being rate limited.", "retry_after": retry_after, "global": False, "code": 0},
            headers=headers,
        )

    def pause(self, method: str, pattern: str) -> asyncio.Event:
        """Hold the answer to the next matching request (recorded at once) until the event is set."""
        release = asyncio.Event()
        self._pauses.append((method, re.compile(pattern), release))
        return release

    def expire_token(self, token: str) -> None:
        """Interaction tokens die after 15 minutes; from now on this one answers 401/50027."""
        self.expired_tokens.add(token)

    # --- feeding events ---------------------------------------------------------------------

    async def wait_identified(self, timeout: float = 15.0) -> dict[str, Any]:
        await asyncio.wait_for(self._identified.wait(), timeout)
        return self.identifies[-1]

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send one gateway DISPATCH to the connection of the shard it belongs to: a guild's
        events to shard `(guild_id >> 22) % num_shards`, a DM's to shard 0 — as Discord routes
        them. With no connection for that shard now, the event waits for one to IDENTIFY."""
        targets = [ws for ws in list(self._sockets) if self._routes_to(ws, data)]
        if not targets:
            self._held.append((event, data))
            return
        self._sequence += 1
        frame = json.dumps({"op": 0, "t": event, "s": self._sequence, "d": data})
        for ws in targets:
            await ws.send_str(frame)

    def _routes_to(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> bool:
        shard_id, num_shards = self._shard_of_socket.get(ws, (0, 1))
        guild_id = data.get("guild_id") if isinstance(data, dict) else None
        return shard_of(int(guild_id), num_shards) == shard_id if guild_id else shard_id == 0

    def shards_connected(self) -> set[int]:
        return {shard for ws, (shard, _) in self._shard_of_socket.items() if ws in self._sockets}

    async def close_gateway(self, code: int = 1000) -> None:
        """Close every gateway connection (4004: the token was refused)."""
        for ws in list(self._sockets):
            await ws.close(code=code)
        self._sockets.clear()
        self._identified.clear()

    # --- payload builders -------------------------------------------------------------------

    def _interaction(
        self,
        kind: int,
        data: dict[str, Any],
        user: FakeUser,
        guild: FakeGuild,
        channel: dict[str, Any],
        at: float | None,
        message: dict[str, Any] | None = None,
        upload_limit: int = DEFAULT_UPLOAD_LIMIT,
    ) -> dict[str, Any]:
        interaction_id = snowflake(at)
        token = f"itoken-{interaction_id}"
        payload = {
            "id": str(interaction_id),
            "application_id": str(APPLICATION_ID),
            "type": kind,
            "token": token,
            "version": 1,
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
            "channel_id": channel["id"],
            "channel": channel,
            "member": user.member(),
            "data": data,
            "app_permissions": str(BASIC_PERMISSIONS),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "context": 0,
            "authorizing_integration_owners": {"0": str(guild.id)},
            "attachment_size_limit": upload_limit,
        }
        if message is not None:
            payload["message"] = message
        self.interactions[token] = {
            "id": interaction_id,
            "channel_id": int(channel["id"]),
            "guild_id": guild.id,
            "kind": kind,
            "message_id": int(message["id"]) if message else None,
        }
        return payload

    def slash_command(
        self,
        name: str,
        options: list[dict[str, Any]] | None = None,
        *,
        user: FakeUser,
        guild: FakeGuild,
        resolved: dict[str, Any] | None = None,
        at: float | None = None,
        channel_id: int | None = None,
        upload_limit: int = DEFAULT_UPLOAD_LIMIT,
    ) -> dict[str, Any]:
        """An INTERACTION_CREATE for `/name` with options (see `option`, `subcommand`)."""
        data: dict[str, Any] = {"id": str(snowflake()), "name": name, "type": 1, "options": options or []}
        if resolved:
            data["resolved"] = resolved
        channel = self._channel_payload(guild, channel_id)
        return self._interaction(2, data, user, guild, channel, at, upload_limit=upload_limit)

    def message_command(self, name: str, message_id: int, *, user: FakeUser, guild: FakeGuild) -> dict[str, Any]:
        """An INTERACTION_CREATE for a message context menu (Apps → `name`) on a message: type 3
        data with the message as its target, resolved in full, as Discord sends it."""
        message = self.messages[message_id]
        data = {
            "id": str(snowflake()),
            "name": name,
            "type": 3,
            "target_id": str(message_id),
            "resolved": {"messages": {str(message_id): message}},
        }
        channel = self._channel_payload(guild, int(message["channel_id"]))
        return self._interaction(2, data, user, guild, channel, None)

    def user_message(self, channel_id: int, content: str, *, user: FakeUser) -> dict[str, Any]:
        """A message a member posted (not the bot), e.g. to aim a context menu at."""
        message = self._create(channel_id, {"content": content}, [])
        message["author"] = user.payload()
        return message

    def autocomplete(
        self, name: str, options: list[dict[str, Any]], *, user: FakeUser, guild: FakeGuild
    ) -> dict[str, Any]:
        data = {"id": str(snowflake()), "name": name, "type": 1, "options": options}
        return self._interaction(4, data, user, guild, self._channel_payload(guild, None), None)

    def click(
        self, message_id: int, custom_id: str, *, user: FakeUser, guild: FakeGuild, at: float | None = None
    ) -> dict[str, Any]:
        """An INTERACTION_CREATE for pressing a button on a message the bot posted."""
        message = self.messages[message_id]
        if custom_id not in custom_ids(message.get("components") or []):
            raise AssertionError(
                f"message {message_id} has no button {custom_id!r}: {custom_ids(message.get('components') or [])}"
            )
        channel = self._channel_payload(guild, int(message["channel_id"]))
        data = {"custom_id": custom_id, "component_type": 2}
        return self._interaction(3, data, user, guild, channel, at, message=message)

    def submit_modal(
        self, opened_by: str, answers: dict[str, str | list[str]], *, user: FakeUser, guild: FakeGuild
    ) -> dict[str, Any]:
        """An INTERACTION_CREATE (type 5) for the form a callback opened on interaction `opened_by`
        (its token), filled in with `answers` by custom_id: a string for a text input, a list of
        values for a menu. As Discord sends it: each answer inside its label (type 18)."""
        opened = self.interactions[opened_by]
        form = opened.get("modal")
        if form is None:
            raise AssertionError(f"interaction {opened_by} opened no form")
        components = []
        for label in form["components"]:
            inner = label.get("component") or {}
            custom_id = inner.get("custom_id")
            if custom_id not in answers:
                continue
            answer = answers[custom_id]
            field: dict[str, Any] = {"type": inner["type"], "id": snowflake() % 1000, "custom_id": custom_id}
            field["values" if isinstance(answer, list) else "value"] = answer
            components.append({"type": 18, "id": snowflake() % 1000, "component": field})
        unknown = set(answers) - {(label.get("component") or {}).get("custom_id") for label in form["components"]}
        if unknown:
            raise AssertionError(f"the form has no field {sorted(unknown)}")
        message = self.messages.get(opened["message_id"]) if opened.get("message_id") else None
        channel = self._channel_payload(guild, opened["channel_id"])
        data = {"custom_id": form["custom_id"], "components": components}
        return self._interaction(5, data, user, guild, channel, None, message=message)

    def reaction(self, message_id: int, emoji: str, *, user: FakeUser, guild: FakeGuild | None) -> dict[str, Any]:
        """A MESSAGE_REACTION_ADD for `emoji` on a message (in a guild, or in a DM when None)."""
        message = self.messages.get(message_id)
        channel_id = message["channel_id"] if message else str(self.dm_channels.get(user.id, 0))
        payload: dict[str, Any] = {
            "user_id": str(user.id),
            "channel_id": channel_id,
            "message_id": str(message_id),
            "emoji": {"id": None, "name": emoji},
            "burst": False,
            "type": 0,
            "message_author_id": str(BOT_USER_ID),
        }
        if guild is not None:
            payload["guild_id"] = str(guild.id)
            member = user.member()
            member.pop("permissions")  # reaction events carry roles, not computed permissions
            payload["member"] = member
        return payload

    def _channel_payload(self, guild: FakeGuild, channel_id: int | None) -> dict[str, Any]:
        if channel_id is not None and channel_id in self.threads:
            return self.threads[channel_id]
        channel = guild.channel_payload()
        if channel_id is not None:
            channel["id"] = str(channel_id)
        return channel

    def upload(self, name: str, data: bytes, content_type: str = "image/png") -> dict[str, Any]:
        """Put a file on the fake CDN; returns the attachment object an option resolves to."""
        file_id = snowflake()
        self.files[file_id] = data
        url = f"{self.base_url}/attachments/{file_id}/{name}"
        return {
            "id": str(file_id),
            "filename": name,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }

    # --- HTTP -------------------------------------------------------------------------------

    async def _cdn(self, request: web.Request) -> web.Response:
        data = self.files.get(int(request.match_info["file_id"]))
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, headers={"Content-Type": "application/octet-stream"})

    async def _api(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        body, files = await self._read_body(request)
        recorded = Request(
            request.method, path, dict(request.query), body, files, dict(request.headers), time.perf_counter()
        )
        async with self._changed:
            self.requests.append(recorded)
            self._changed.notify_all()
        if self.on_request is not None:
            self.on_request(recorded)
        for paused in list(self._pauses):
            method, pattern, release = paused
            if method == request.method and pattern.fullmatch(path):
                self._pauses.remove(paused)
                await release.wait()
                break
        fault = self._take_fault(request.method, path)
        try:
            if fault is not None and not fault.after_effect:
                response = json_response(fault.body, fault.status, fault.headers)
            else:
                response = self._handle(request.method, path, body, files, dict(request.query))
                if fault is not None:
                    response = json_response(fault.body, fault.status, fault.headers)
        except DiscordError as error:
            response = json_response({"message": error.message, "code": error.code}, error.status)
        async with self._changed:
            recorded.answered = True
            self._changed.notify_all()
        return response

    @staticmethod
    async def _read_body(request: web.Request) -> tuple[Any, list[tuple[str, bytes]]]:
        if request.content_type.startswith("multipart/"):
            payload: Any = None
            files = []
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":
                    payload = json.loads(await part.text())
                else:
                    files.append((part.filename or part.name or "", bytes(await part.read())))
            return payload, files
        raw = await request.read()
        return (json.loads(raw) if raw else None), []

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.method == method and fault.pattern.fullmatch(path) and fault.remaining > 0:
                fault.remaining -= 1
                return fault
        return None

    def _handle(  # noqa: C901 - one route table: every REST route the fake serves, read top to bottom
        self, method: str, path: str, body: Any, files: list[tuple[str, bytes]], query: dict[str, str]
    ) -> web.Response:
        parts = path.strip("/").split("/")
        match method, parts:
            case "GET", ["users", "@me"]:
                return json_response(self.bot)
            case "GET", ["oauth2", "applications", "@me"]:
                return json_response(
                    {
                        "id": str(APPLICATION_ID),
                        "name": "imagine-bot",
                        "description": "",
                        "icon": None,
                        "bot_public": True,
                        "bot_require_code_grant": False,
                        "verify_key": "0" * 64,
                        "owner": user_payload(1, "owner"),
                        "flags": 0,
                        "bot": self.bot,
                    }
                )
            case "GET", ["gateway", "bot"]:
                return json_response(
                    {
                        "url": f"ws://127.0.0.1:{self.port}/",
                        "shards": self.shard_count,
                        "session_start_limit": {
                            "total": 1000,
                            "remaining": 1000,
                            "reset_after": 0,
                            "max_concurrency": self.max_concurrency,
                        },
                    }
                )
            case "PUT", ["applications", _, "commands"]:
                return json_response(self._register_commands("global", body))
            case "PUT", ["applications", _, "guilds", guild_id, "commands"]:
                return json_response(self._register_commands(guild_id, body))
            case "POST", ["interactions", interaction_id, token, "callback"]:
                return json_response(self._callback(int(interaction_id), token, body or {}, files))
            case "PATCH", ["webhooks", _, token, "messages", message_id]:
                self._check_token(token)
                return json_response(self._edit(self._webhook_message(token, message_id), body or {}, files))
            case "GET", ["webhooks", _, token, "messages", message_id]:
                self._check_token(token)
                return json_response(self._webhook_message(token, message_id))
            case "DELETE", ["webhooks", _, token, "messages", message_id]:
                self._check_token(token)
                self._delete(self._webhook_message(token, message_id))
                return web.Response(status=204)
            case "POST", ["webhooks", _, token]:
                self._check_token(token)
                interaction = self.interactions[token]
                flags = (body or {}).get("flags", 0)
                message = self._create(interaction["channel_id"], body or {}, files, webhook=True, flags=flags)
                return json_response(message)
            case "POST", ["channels", channel_id, "messages"]:
                return json_response(self._send(int(channel_id), body or {}, files))
            case "PATCH", ["channels", channel_id, "messages", message_id]:
                message = self._message(int(channel_id), int(message_id))
                return json_response(self._edit(message, body or {}, files))
            case "DELETE", ["channels", channel_id, "messages", message_id]:
                self._delete(self._message(int(channel_id), int(message_id)))
                return web.Response(status=204)
            case "POST", ["channels", channel_id, "messages", message_id, "threads"]:
                return json_response(self._start_thread(int(channel_id), int(message_id), body or {}), 201)
            case "POST", ["users", "@me", "channels"]:
                return json_response(self._dm_channel(int(body["recipient_id"])))
        raise DiscordError(404, 0, f"the fake Discord has no route {method} {path}")

    # --- Discord's behaviour ----------------------------------------------------------------

    def _register_commands(self, scope: str, body: list[dict[str, Any]]) -> list[dict[str, Any]]:
        registered = []
        for command in body:
            registered.append(
                {
                    "id": str(snowflake()),
                    "application_id": str(APPLICATION_ID),
                    "version": str(snowflake()),
                    "type": 1,
                    "default_member_permissions": None,
                    "nsfw": False,
                    "options": [],
                    "description": "",
                    **command,
                }
            )
        self.commands[scope] = registered
        return registered

    def _check_token(self, token: str) -> None:
        if token in self.expired_tokens:
            raise DiscordError(401, 50027, "Invalid Webhook Token")
        if token not in self.interactions:
            raise DiscordError(404, 10015, "Unknown Webhook")

    def _callback(
        self, interaction_id: int, token: str, body: dict[str, Any], files: list[tuple[str, bytes]]
    ) -> dict[str, Any]:
        interaction = self.interactions.get(token)
        if interaction is None or interaction["id"] != interaction_id or token in self.expired_tokens:
            raise DiscordError(404, 10062, "Unknown interaction")
        if interaction.get("acknowledged"):
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        interaction["acknowledged"] = True
        kind = body.get("type")
        data = body.get("data") or {}
        flags = data.get("flags", 0) or 0
        result: dict[str, Any] = {
            "interaction": {
                "id": str(interaction_id),
                "type": interaction["kind"],
                "activity_instance_id": None,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(flags & 64),
            }
        }
        # As Discord answers (with_response=true): the message itself only for the responses that
        # carry content (4 sends one, 7 edits one); a defer (5, 6) gets only its type, and the
        # id of the message it will become in `interaction.response_message_id`.
        if kind in (4, 5):
            message = self._create(
                interaction["channel_id"],
                data if kind == 4 else {"content": ""},
                files,
                webhook=True,
                flags=flags | (128 if kind == 5 else 0),
            )
            interaction["original"] = int(message["id"])
            result["interaction"]["response_message_id"] = message["id"]
            result["resource"] = {"type": kind, "message": message} if kind == 4 else {"type": kind}
        elif kind in (6, 7):
            interaction["original"] = interaction["message_id"]
            result["resource"] = {"type": kind}
            if kind == 7:
                message = self._edit(self.messages[interaction["message_id"]], data, files)
                result["interaction"]["response_message_id"] = message["id"]
                result["resource"]["message"] = message
        elif kind == 8:
            interaction["choices"] = data.get("choices", [])
        elif kind == 9:
            # A modal: Discord shows the form; its submission is a new interaction (submit_modal).
            if not data.get("custom_id") or not data.get("title") or not data.get("components"):
                raise DiscordError(400, 50035, "Invalid Form Body")
            interaction["modal"] = data
        return result

    def _webhook_message(self, token: str, message_id: str) -> dict[str, Any]:
        interaction = self.interactions[token]
        if message_id == "@original":
            if "original" not in interaction:
                raise DiscordError(404, 10008, "Unknown Message")
            return self._message(None, interaction["original"])
        return self._message(None, int(message_id))

    def _message(self, channel_id: int | None, message_id: int) -> dict[str, Any]:
        message = self.messages.get(message_id)
        if message is None or (channel_id is not None and int(message["channel_id"]) != channel_id):
            raise DiscordError(404, 10008, "Unknown Message")
        return message

    def _attachments(
        self, listed: list[dict[str, Any]] | None, files: list[tuple[str, bytes]], existing: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        kept = []
        if listed:
            keep_ids = {str(a.get("id")) for a in listed}
            kept = [a for a in existing if a["id"] in keep_ids]
        new = [self.upload(name, data) for name, data in files]
        return kept + new

    def _create(
        self,
        channel_id: int,
        body: dict[str, Any],
        files: list[tuple[str, bytes]],
        *,
        webhook: bool = False,
        flags: int = 0,
    ) -> dict[str, Any]:
        message_id = snowflake()
        guild_id = next(
            (
                g.id
                for g in self.guilds.values()
                if channel_id == g.channel_id or self.threads.get(channel_id, {}).get("guild_id") == str(g.id)
            ),
            None,
        )
        message: dict[str, Any] = {
            "id": str(message_id),
            "channel_id": str(channel_id),
            "type": 0,
            "author": self.bot,
            "content": body.get("content") or "",
            "embeds": body.get("embeds") or [],
            "components": self._numbered(body.get("components") or []),
            "attachments": self._attachments(None, files, []),
            "timestamp": iso_now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "pinned": False,
            "flags": flags,
            "allowed_mentions": body.get("allowed_mentions"),  # not Discord's: kept for tests to read
        }
        if body.get("message_reference"):
            message["message_reference"] = {"type": 0, **body["message_reference"]}
        if guild_id is not None:
            message["guild_id"] = str(guild_id)
        if webhook:
            message["webhook_id"] = str(APPLICATION_ID)
            message["application_id"] = str(APPLICATION_ID)
        self.messages[message_id] = message
        return message

    @staticmethod
    def _numbered(components: list[dict[str, Any]], start: int = 1) -> list[dict[str, Any]]:
        """Components as Discord returns them: each with a numeric `id`, unique in the message
        (given ones are kept), numbered depth first."""
        counter = itertools.count(start)

        def number(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            numbered = []
            for component in items:
                component = {**component, "id": component.get("id") or next(counter)}
                if component.get("components"):
                    component["components"] = number(component["components"])
                numbered.append(component)
            return numbered

        return number(components)

    def _send(self, channel_id: int, body: dict[str, Any], files: list[tuple[str, bytes]]) -> dict[str, Any]:
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            # Discord: the same author and nonce within a few minutes returns the first message.
            earlier = self._nonces.get((channel_id, str(nonce)))
            if earlier is not None and earlier in self.messages:
                return self.messages[earlier]
        message = self._create(channel_id, body, files)
        if nonce is not None:
            message["nonce"] = str(nonce)
            self._nonces[(channel_id, str(nonce))] = int(message["id"])
        return message

    def _edit(self, message: dict[str, Any], body: dict[str, Any], files: list[tuple[str, bytes]]) -> dict[str, Any]:
        for key in ("content", "embeds", "components", "allowed_mentions"):
            if key in body:
                message[key] = body[key] if body[key] is not None else ([] if key != "content" else "")
        message["components"] = self._numbered(message["components"])
        if "flags" in body and body["flags"] is not None:
            message["flags"] = (message["flags"] & 64) | body["flags"]
        message["flags"] = message["flags"] & ~128  # no longer "thinking"
        if "attachments" in body or files:
            message["attachments"] = self._attachments(body.get("attachments"), files, message["attachments"])
        message["edited_timestamp"] = iso_now()
        return message

    def _delete(self, message: dict[str, Any]) -> None:
        self.messages.pop(int(message["id"]), None)
        self.deleted.add(int(message["id"]))

    def _start_thread(self, channel_id: int, message_id: int, body: dict[str, Any]) -> dict[str, Any]:
        message = self._message(channel_id, message_id)
        if message_id in self.threads:
            raise DiscordError(400, 160004, "A thread has already been created for this message")
        guild_id = message.get("guild_id")
        thread = {
            "id": str(message_id),
            "type": 11,
            "guild_id": guild_id,
            "parent_id": str(channel_id),
            "name": body.get("name", ""),
            "owner_id": str(BOT_USER_ID),
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "message_count": 0,
            "member_count": 1,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": body.get("auto_archive_duration", 1440),
                "archive_timestamp": iso_now(),
                "locked": False,
            },
        }
        self.threads[message_id] = thread
        message["thread"] = thread
        return thread

    def _dm_channel(self, user_id: int) -> dict[str, Any]:
        channel_id = self.dm_channels.setdefault(user_id, snowflake())
        return {
            "id": str(channel_id),
            "type": 1,
            "last_message_id": None,
            "recipients": [user_payload(user_id, f"user-{user_id}")],
        }

    # --- gateway ----------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None}))
        try:
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    continue
                message = json.loads(frame.data)
                op = message.get("op")
                if op == 1:
                    await ws.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
                elif op == 2:
                    await self._identify(ws, message["d"])
                elif op == 6:
                    await ws.send_str(json.dumps({"op": 9, "d": False, "s": None, "t": None}))
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
            self._shard_of_socket.pop(ws, None)
        return ws

    async def _identify(self, ws: web.WebSocketResponse, identify: dict[str, Any]) -> None:
        self.identifies.append(identify)
        shard_id, num_shards = identify.get("shard") or [0, 1]
        if num_shards == 1 and len(self.guilds) > self.guild_limit:
            await ws.close(code=4011, message=b"Sharding required.")
            return
        self.identified_shards.append((shard_id, num_shards, time.monotonic()))
        self._shard_of_socket[ws] = (shard_id, num_shards)
        self._sockets.append(ws)
        mine = [g for g in self.guilds.values() if shard_of(g.id, num_shards) == shard_id]
        ready = {
            "v": 10,
            "user": self.bot,
            "guilds": [{"id": str(g.id), "unavailable": True} for g in mine],
            "session_id": f"session-{snowflake()}",
            "resume_gateway_url": f"ws://127.0.0.1:{self.port}/",
            "application": {"id": str(APPLICATION_ID), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "user_settings": {},
            "shard": [shard_id, num_shards],
        }
        self._sequence += 1
        await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": self._sequence, "d": ready}))
        for guild in mine:
            self._sequence += 1
            await ws.send_str(
                json.dumps({"op": 0, "t": "GUILD_CREATE", "s": self._sequence, "d": guild.create_payload()})
            )
        held, self._held = self._held, []
        for event, data in held:  # events that waited for this shard (the others wait on)
            await self.dispatch(event, data)
        async with self._changed:
            self._identified.set()
            self._changed.notify_all()


def shard_of(guild_id: int, num_shards: int) -> int:
    """The shard a guild's events go to (Discord's formula)."""
    return (guild_id >> 22) % num_shards


# --- option builders -----------------------------------------------------------------------

_OPTION_TYPES = {str: 3, int: 4, bool: 5, float: 10}


def option(name: str, value: Any, kind: int | None = None) -> dict[str, Any]:
    """One command option as Discord sends it (type from the value unless given)."""
    return {"name": name, "type": kind or _OPTION_TYPES[type(value)], "value": value}


def subcommand(name: str, options: list[dict[str, Any]] | None = None, *, group: bool = False) -> dict[str, Any]:
    return {"name": name, "type": 2 if group else 1, "options": options or []}
