"""A fake Discord on 127.0.0.1: the REST API, the CDN and the gateway, for tests and benchmarks.

The real discord.py client talks to it (`FakeDiscord.install` points `Route.BASE` and
`DiscordWebSocket.DEFAULT_GATEWAY` here). It keeps what imagine-bot needs the way Discord does —
the routes, fields and error codes of Discord's API reference (discord/discord-api-spec,
`specs/openapi.json`): interaction responses and their tokens, channel messages (with `nonce` +
`enforce_nonce`), threads started from messages, DM channels and uploaded files. It records every
request (tests/fakes/recording.py) and can misbehave on purpose: 429 with or without `Via`, 5xx
before or after the effect (a response lost on its way back), expired interaction tokens.

Events reach the bot through the gateway (tests/fakes/discord_gateway.py), as raw payloads
(`dispatch`); the builders here (`slash_command`, `click`, `reaction`, …) write those payloads the
way Discord sends them.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.discord_gateway import DiscordGateway
from tests.fakes.discord_model import (
    API_PREFIX,
    APPLICATION_ID,
    BASIC_PERMISSIONS,
    BOT_USER_ID,
    DEFAULT_UPLOAD_LIMIT,
    FakeGuild,
    FakeUser,
    custom_ids,
    iso_now,
    snowflake,
    user_payload,
)
from tests.fakes.recording import Call, json_response


@dataclass
class DiscordCall(Call):
    """One REST request the bot made: `path` is without the /api/v10 prefix."""

    query: dict[str, str]
    json: Any  # the JSON body, or a multipart request's payload_json
    files: list[tuple[str, bytes]]

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


class DiscordError(Exception):
    """An error answer as Discord gives it: an HTTP status and a JSON {"code", "message"}."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class FakeDiscord(DiscordGateway[DiscordCall]):
    """Discord's REST API, CDN and gateway on one loopback port."""

    def __init__(
        self,
        guilds: Iterable[FakeGuild] = (),
        *,
        shard_count: int = 1,
        max_concurrency: int = 16,
        guild_limit: int = 2500,
    ) -> None:
        super().__init__(guilds, shard_count=shard_count, max_concurrency=max_concurrency, guild_limit=guild_limit)
        self.messages: dict[int, dict[str, Any]] = {}
        self.deleted: set[int] = set()
        self.files: dict[int, bytes] = {}
        self.threads: dict[int, dict[str, Any]] = {}  # thread id (= its starter message id) → channel
        self.dm_channels: dict[int, int] = {}  # user id → DM channel id
        self.interactions: dict[str, dict[str, Any]] = {}  # token → what the interaction was
        self.expired_tokens: set[str] = set()
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self._nonces: dict[tuple[int, str], int] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self._gateway),
            web.get("/attachments/{file_id}/{name}", self._cdn),
            web.route("*", API_PREFIX + "/{tail:.*}", self._api),
        ]

    def install(self, monkeypatch) -> None:
        """Point discord.py's REST base and gateway here for the rest of the test."""
        import yarl
        from discord.gateway import DiscordWebSocket
        from discord.http import Route

        monkeypatch.setattr(Route, "BASE", self.base_url + API_PREFIX)
        monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(self.gateway_url))

    # --- what the bot did -------------------------------------------------------------------

    def channel_messages(self, channel_id: int) -> list[dict[str, Any]]:
        return [m for m in self.messages.values() if int(m["channel_id"]) == channel_id]

    def original(self, token: str) -> dict[str, Any] | None:
        mid = self.interactions.get(token, {}).get("original")
        return self.messages.get(mid) if mid else None

    def describe(self, call: DiscordCall) -> str:
        return f"{call.method} {call.path} {str(call.json)[:300]}"

    # --- misbehaving ------------------------------------------------------------------------

    def error_body(self, status: int) -> Any:
        return {"message": "fake failure", "code": 0}

    def rate_limit_next(self, method: str, pattern: str, *, retry_after: float = 0.05, via: bool = True) -> None:
        """A 429 as Discord sends it (with `Via`), or as Cloudflare's ban looks (without)."""
        self.fail(
            method,
            pattern,
            status=429,
            body={"message": "You are being rate limited.", "retry_after": retry_after, "global": False, "code": 0},
            headers={"Via": "1.1 google"} if via else {},
        )

    def expire_token(self, token: str) -> None:
        """Interaction tokens die after 15 minutes; from now on this one answers 401/50027."""
        self.expired_tokens.add(token)

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

    async def _api(self, request: web.Request) -> web.StreamResponse:
        body, files = await self._read_body(request)
        call = DiscordCall(
            request.method,
            "/" + request.match_info["tail"],
            dict(request.headers),
            query=dict(request.query),
            json=body,
            files=files,
        )
        return await self.serve(call, self._answer)

    async def _answer(self, call: DiscordCall) -> web.Response:
        try:
            return self._handle(call.method, call.path, call.json, call.files, call.query)
        except DiscordError as error:
            return json_response({"message": error.message, "code": error.code}, error.status)

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
                        "url": self.gateway_url,
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
