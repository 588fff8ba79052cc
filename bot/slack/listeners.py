"""Slash commands and buttons in Slack: bolt's listeners (ack only; the work relayed to the
adapter's loop), the parser and the runner, and the answers. Part of `SlackAdapter`
(bot/slack/adapter.py)."""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot import commands as c
from bot.actions import JobAction, command_for
from bot.replies import APOLOGY
from bot.slack.blocks import escape, parse_action
from bot.slack.messages import Messages
from engine.domain.errors import UsageError, UserFacingError

log = logging.getLogger("bot.slack.adapter")

Relay = Callable[[Coroutine[Any, Any, Any]], concurrent.futures.Future]


def delivery_id(body: dict, headers: dict[str, Any]) -> str | None:
    """What makes one request from Slack unique, for refusing it a second time: an event's
    `event_id` (Slack's retries repeat it), else the request's signature — a replay of a slash
    command or a button press carries the same one, and a new one cannot be made without the
    signing secret. None in Socket Mode (no signatures; the socket is authenticated)."""
    if body.get("type") == "event_callback" and body.get("event_id"):
        return str(body["event_id"])[:120]
    signature = headers.get("x-slack-signature") or []
    signature = signature[0] if isinstance(signature, list) and signature else signature
    if isinstance(signature, str) and signature.startswith("v0="):
        return f"request:{signature[3:67]}"
    return None


async def acknowledge(ack: AsyncAck) -> None:
    """Only ack: anything that could raise belongs in the lazy listener."""
    await ack()


class Listeners(Messages):
    """What the slash command and button listeners do (SlackAdapter.register wires them)."""

    # --- slash commands ----------------------------------------------------------------------

    async def imagine_command(self, command: dict, respond: AsyncRespond) -> None:
        """`/imagine <prompt | history | quota | thread N | vary … | blend … | …>`."""
        await self._slash(command, respond, lambda text: c.parse_imagine_text(text, self.limits))

    async def admin_command(self, command: dict, respond: AsyncRespond) -> None:
        """`/imagine-admin quota|ban|unban|block-term|unblock-term|audit|stats|mod-role …`."""
        await self._slash(command, respond, lambda text: c.parse_admin(text.split()))

    async def _slash(self, command: dict, respond: AsyncRespond, parse: Callable[[str], c.Command]) -> None:
        async with self._working():
            started = time.perf_counter()
            try:
                try:
                    parsed = parse(command.get("text") or "")
                except UsageError as error:
                    await respond(text=escape(error.message), response_type="ephemeral")
                    return
                actor = await self.directory.actor(
                    command["team_id"], command["user_id"], team_name=command.get("team_domain", "")
                )
                channel = command["channel_id"]
                reply = await self.runner.run(actor, parsed, {"channel": channel})
                text = self._text(reply, parsed)
                if reply.job is not None:
                    text = await self._after_command(actor, reply, channel) or text
                public = not (reply.ephemeral or reply.is_error or reply.job)
                await respond(text=text, response_type="in_channel" if public else "ephemeral")
                log.info(
                    "%s by %s/%s: %s in %.0f ms",
                    command.get("command"),
                    command["team_id"],
                    command["user_id"],
                    type(parsed).__name__,
                    (time.perf_counter() - started) * 1000,
                )
            except Exception:  # noqa: BLE001 - the command was acked: tell the user, never go silent
                log.exception("%s by %s failed after the ack", command.get("command"), command.get("user_id"))
                await self._respond_quietly(respond, APOLOGY)

    # --- buttons -----------------------------------------------------------------------------

    async def button_pressed(self, body: dict, action: dict, respond: AsyncRespond) -> None:
        """Variations n, Upscale n, Reroll, Cancel, Zoom Out, the pans (their meaning is all in
        the action id)."""
        async with self._working():
            try:
                try:
                    press = parse_action(action.get("action_id", ""), action.get("value", ""))
                except UserFacingError as error:
                    await self._respond_quietly(respond, escape(error.message), replace_original=False)
                    return
                if press is None:
                    return
                channel = body["channel"]["id"]
                user = body["user"]
                team = (body.get("team") or {}).get("id") or user.get("team_id")
                actor = await self.directory.actor(team, user["id"])
                command = command_for(
                    JobAction(press.kind), press.generation_id, press.index, direction=press.direction
                )
                reply = await self.runner.run(actor, command, {"channel": channel})
                if reply.queue_position is None:  # an error, or what a cancel did
                    await respond(text=self._text(reply, command), response_type="ephemeral", replace_original=False)
                if reply.job is not None:
                    await self._after_command(actor, reply, channel)
            except Exception:  # noqa: BLE001
                log.exception("button %s failed after the ack", action.get("action_id"))
                await self._respond_quietly(respond, APOLOGY, replace_original=False)
