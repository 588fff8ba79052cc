"""Slash commands and buttons in Slack: bolt's listeners (ack only; the work relayed to the
adapter's loop), the parser and the runner, and the answers. Part of `SlackAdapter`
(bot/slack/adapter.py)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError

from bot import commands as c
from bot.actions import JobAction, command_for
from bot.replies import APOLOGY, Reply
from bot.slack.blocks import ACTION_PATTERN, escape, parse_action
from bot.slack.delivery import UNREACHABLE
from bot.slack.messages import Messages
from bot.slack.web import api_error
from engine.domain.errors import StoreUnavailable, UsageError, UserFacingError
from engine.domain.types import Actor, GenerationStatus, Platform

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
    """register() and what the listeners it registers do."""

    def register(self, app: AsyncApp, relay: Relay) -> None:
        """Listen on `app`. Its loop only acks; `relay` hands each piece of work to this adapter's
        loop, so an ack never waits behind a database transaction or a Slack call."""

        async def skip_repeats(
            req: AsyncBoltRequest, body: dict, next: Callable[[], Awaitable[BoltResponse]]
        ) -> BoltResponse:
            delivery = delivery_id(body, req.headers)
            if delivery:
                # The ack is this HTTP answer, so this one insert comes before it: it decides
                # whether any work starts at all, on whichever replica the repeat reaches.
                try:
                    first = await asyncio.wrap_future(relay(self.events.first_time(Platform.SLACK, delivery)))
                except Exception as error:  # noqa: BLE001 - unsure: let Slack retry later rather than act twice
                    log.warning("%s: could not record it (%s); asking Slack to retry", delivery, error)
                    return BoltResponse(status=503, body="")
                if not first:
                    log.info("%s was already handled; skipping the repeat", delivery)
                    return BoltResponse(status=200, body="")
            return await next()

        async def imagine(command: dict, respond: AsyncRespond) -> None:
            relay(self.imagine_command(command, respond))

        async def imagine_admin(command: dict, respond: AsyncRespond) -> None:
            relay(self.admin_command(command, respond))

        async def button(body: dict, action: dict, respond: AsyncRespond) -> None:
            relay(self.button_pressed(body, action, respond))

        async def reaction(event: dict, body: dict, context: AsyncBoltContext) -> None:
            relay(self.reaction_added(event, body, context.bot_user_id))

        app.middleware(skip_repeats)
        app.command("/imagine")(ack=acknowledge, lazy=[imagine])
        app.command("/imagine-admin")(ack=acknowledge, lazy=[imagine_admin])
        app.action(ACTION_PATTERN)(ack=acknowledge, lazy=[button])
        app.event("reaction_added")(ack=acknowledge, lazy=[reaction])

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

    @staticmethod
    def _text(reply: Reply, command: c.Command) -> str:
        # The runner escapes what it builds from user text; errors and the usage text come raw.
        return escape(reply.text) if reply.is_error or isinstance(command, c.Help) else reply.text

    async def _after_command(self, actor: Actor, reply: Reply, channel: str) -> str | None:
        """Show a queued job's status message; if the bot cannot post in the channel, cancel the
        job (refunded) and return what to tell the user instead."""
        try:
            if reply.queue_position is not None:
                await self._post_progress(reply.job, reply.queue_position, channel)
        except StoreUnavailable as error:
            # The job is queued, charged and will be delivered: say that, not "sorry".
            log.warning("job %s: status message not fully set up: %s", reply.job.id, error.__cause__ or error)
        except SlackApiError as error:
            if api_error(error) not in UNREACHABLE:
                raise
            await self.service.cancel(actor, reply.job.id)
            log.info("job %s: cancelled, imagine-bot cannot post in %s (%s)", reply.job.id, channel, api_error(error))
            return (
                "imagine-bot cannot post in this channel, so nothing was queued or charged. "
                "Invite it (`/invite @imagine`) and try again."
            )
        finally:
            if self.delivery is not None and reply.job.status == GenerationStatus.CANCELLED:
                # No worker will publish a wake-up for a cancel: show it now, not at the next
                # sweep. (Not for new jobs: a sweep builds a view of every active job.)
                self.delivery.kick()
        return None

    # --- buttons -----------------------------------------------------------------------------

    async def button_pressed(self, body: dict, action: dict, respond: AsyncRespond) -> None:
        """Variations n, Upscale n, Reroll, Cancel (their meaning is all in the action id)."""
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
                command = command_for(JobAction(press.kind), press.generation_id, press.index)
                reply = await self.runner.run(actor, command, {"channel": channel})
                if reply.queue_position is None:  # an error, or what a cancel did
                    await respond(text=self._text(reply, command), response_type="ephemeral", replace_original=False)
                if reply.job is not None:
                    await self._after_command(actor, reply, channel)
            except Exception:  # noqa: BLE001
                log.exception("button %s failed after the ack", action.get("action_id"))
                await self._respond_quietly(respond, APOLOGY, replace_original=False)
