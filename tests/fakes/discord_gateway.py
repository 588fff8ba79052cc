"""The fake Discord's gateway: the websocket on which Discord pushes events to the bot.

It follows Discord's gateway documentation (developer docs, "Gateway") as far as discord.py
needs it: HELLO (op 10) first, heartbeat ACKs (op 11), IDENTIFY (op 2) answered with READY and
a GUILD_CREATE for each guild of the shard, RESUME (op 6) refused with INVALID_SESSION (op 9) so
the client identifies afresh, and close code 4011 ("Sharding required") for an unsharded
IDENTIFY with more guilds than one shard may hold. Events go out as DISPATCH (op 0) to the
connection of the shard they belong to.

FakeDiscord (tests/fakes/discord.py) adds the REST API on top; this layer knows only the guilds
and the bot's own user.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from tests.fakes.discord_model import APPLICATION_ID, BOT_USER_ID, FakeGuild, shard_of, snowflake, user_payload
from tests.fakes.recording import DEFAULT_TIMEOUT_S, CallT, RecordingServer, json_frames


class DiscordGateway(RecordingServer[CallT]):
    """The gateway side of the fake Discord, with the guilds it serves."""

    name = "Discord"

    def __init__(
        self,
        guilds: Iterable[FakeGuild] = (),
        *,
        shard_count: int = 1,
        max_concurrency: int = 16,
        guild_limit: int = 2500,
    ) -> None:
        super().__init__()
        self.guilds = {g.id: g for g in guilds}
        #: What /gateway/bot recommends; an unsharded IDENTIFY with more guilds than
        #: `guild_limit` is closed with 4011, as Discord does past 2,500 guilds.
        self.shard_count = shard_count
        self.max_concurrency = max_concurrency
        self.guild_limit = guild_limit
        self.bot = user_payload(BOT_USER_ID, "imagine-bot", bot=True)
        #: Every IDENTIFY payload, in order.
        self.identifies: list[dict[str, Any]] = []
        #: (shard id, shard count, time.monotonic()) of every IDENTIFY, in order.
        self.identified_shards: list[tuple[int, int, float]] = []
        #: The identified connections and the (shard id, shard count) each runs: only these
        #: get events (a connection that has not identified yet has no shard).
        self._shard_of_socket: dict[web.WebSocketResponse, tuple[int, int]] = {}
        #: Events for a shard no client runs right now: sent when one identifies for it.
        self._held: list[tuple[str, dict[str, Any]]] = []
        self._sequence = 0
        self._identified = asyncio.Event()

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    # --- feeding events ---------------------------------------------------------------------

    async def wait_identified(self, timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
        """Wait for a client to IDENTIFY (since the last `close_gateway`); return its payload."""
        await asyncio.wait_for(self._identified.wait(), timeout)
        return self.identifies[-1]

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send one gateway DISPATCH to the connection of the shard it belongs to: a guild's
        events to shard `(guild_id >> 22) % num_shards`, a DM's to shard 0 — as Discord routes
        them. With no connection for that shard now, the event waits for one to IDENTIFY."""
        targets = [ws for ws, shard in list(self._shard_of_socket.items()) if self._routes_to(shard, data)]
        if not targets:
            self._held.append((event, data))
            return
        self._sequence += 1
        for ws in targets:
            await ws.send_json({"op": 0, "t": event, "s": self._sequence, "d": data})

    @staticmethod
    def _routes_to(shard: tuple[int, int], data: dict[str, Any]) -> bool:
        shard_id, num_shards = shard
        guild_id = data.get("guild_id") if isinstance(data, dict) else None
        return shard_of(int(guild_id), num_shards) == shard_id if guild_id else shard_id == 0

    def shards_connected(self) -> set[int]:
        return {shard for shard, _ in self._shard_of_socket.values()}

    async def close_gateway(self, code: int = 1000) -> None:
        """Close every gateway connection (4004: the token was refused)."""
        for ws in list(self.sockets):
            await ws.close(code=code)
        # From now on events wait for a new IDENTIFY, even before the handlers see the close.
        self._shard_of_socket.clear()
        self._identified.clear()

    # --- the websocket ----------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        hello = {"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None}
        async with self.websocket(request, hello) as ws:
            try:
                async for message in json_frames(ws):
                    op = message.get("op")
                    if op == 1:  # heartbeat
                        await ws.send_json({"op": 11, "d": None, "s": None, "t": None})
                    elif op == 2:
                        await self._identify(ws, message["d"])
                    elif op == 6:  # resume: this fake keeps no sessions
                        await ws.send_json({"op": 9, "d": False, "s": None, "t": None})
            finally:
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
        mine = [g for g in self.guilds.values() if shard_of(g.id, num_shards) == shard_id]
        ready = {
            "v": 10,
            "user": self.bot,
            "guilds": [{"id": str(g.id), "unavailable": True} for g in mine],
            "session_id": f"session-{snowflake()}",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(APPLICATION_ID), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "user_settings": {},
            "shard": [shard_id, num_shards],
        }
        self._sequence += 1
        await ws.send_json({"op": 0, "t": "READY", "s": self._sequence, "d": ready})
        for guild in mine:
            self._sequence += 1
            await ws.send_json({"op": 0, "t": "GUILD_CREATE", "s": self._sequence, "d": guild.create_payload()})
        held, self._held = self._held, []
        for event, data in held:  # events that waited for this shard (the others wait on)
            await self.dispatch(event, data)
        self._identified.set()
        await self.notify()
