"""Slash commands, buttons and the Vary (Region) form in Slack: bolt's listeners (ack only; the
work relayed to the adapter's loop), the parser and the runner, and the answers. Part of
`SlackAdapter` (bot/slack/adapter.py)."""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError

from bot import commands as c
from bot.actions import JobAction, command_for
from bot.replies import APOLOGY
from bot.slack.blocks import ButtonPress, escape, parse_action
from bot.slack.forms import PROMPT, FormError, read_region_form, region_form
from bot.slack.messages import Messages
from bot.slack.web import api_error
from engine.domain.errors import UsageError, UserFacingError
from engine.domain.types import EditRequest, ImageRef, RenderParams

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


async def review_region_form(ack: AsyncAck, view: dict) -> None:
    """The Vary (Region) form's ack, which is where Slack takes a refusal: the answers are
    checked (no I/O, nothing charged) and a bad one is named under its field, the form staying
    open; a good one closes it, and the lazy listener starts the edit. Never raises (see
    `acknowledge`)."""
    try:
        read_region_form(view)
    except FormError as error:
        await ack(response_action="errors", errors=error.errors)
        return
    except Exception:  # noqa: BLE001 - a form answered with an apology, not an ack lost
        log.exception("the Vary (Region) form could not be read")
        await ack(response_action="errors", errors={PROMPT: APOLOGY})
        return
    await ack()


class Listeners(Messages):
    """What the slash command, button and form listeners do (SlackAdapter.register wires them)."""

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
        the action id), and Vary (Region), which opens a form."""
        try:
            press = parse_action(action.get("action_id", ""), action.get("value", ""))
        except UserFacingError as error:
            await self._respond_quietly(respond, escape(error.message), replace_original=False)
            return
        if press is None:
            return
        if press.kind == "region":
            async with self._working(slot=False):  # a trigger_id lasts 3 s: it cannot wait its turn
                await self._open_region_form(body, press, respond)
            return
        async with self._working():
            try:
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

    # --- the Vary (Region) form (bot/slack/forms.py) -----------------------------------------

    async def _open_region_form(self, body: dict, press: ButtonPress, respond: AsyncRespond) -> None:
        """🖌️ Vary (Region) under a single image: the form is the answer (`views.open`). Whether
        the job exists is the service's to say when the form is sent, as the trigger_id does not
        leave time for a lookup first."""
        try:
            form = region_form(
                press.generation_id,
                press.index or 1,
                body["channel"]["id"],
                max_prompt_chars=self.service.policy.max_prompt_chars,
            )
            await self.client.views_open(trigger_id=body.get("trigger_id"), view=form)
        except SlackApiError as error:
            # Mostly expired_trigger_id: the bot was slower than Slack's 3 seconds.
            log.info("the Vary (Region) form of #%s could not be opened: %s", press.generation_id, api_error(error))
            await self._respond_quietly(
                respond, "The form could not be opened in time; press Vary (Region) again.", replace_original=False
            )
        except Exception:  # noqa: BLE001 - the press was acked: tell the user, never go silent
            log.exception("the Vary (Region) form of #%s could not be opened", press.generation_id)
            await self._respond_quietly(respond, APOLOGY, replace_original=False)

    async def region_form_sent(self, body: dict, view: dict) -> None:
        """The Vary (Region) form, sent (and acked: `review_region_form` refused a bad one): an
        edit of that image from the prompt, like `/imagine edit`, charged to whoever sent it and
        shown in the image's thread. A refusal now (no such job, quota, a blocked term) can only
        be told privately in the channel: the form is closed and a view has no response_url."""
        try:
            form = read_region_form(view)
        except FormError:
            return  # refused in the form itself
        sender = body.get("user") or {}
        user = sender.get("id")
        if not isinstance(user, str):
            log.info("a Vary (Region) form of #%s was sent by no one; nobody to answer", form.job_id)
            return
        async with self._working():
            try:
                team = (body.get("team") or {}).get("id") or sender["team_id"]
                actor = await self.directory.actor(team, user)
                request = EditRequest(
                    ImageRef(form.job_id, form.index), form.spec.to_dict(), form.prompt, params=RenderParams(n=4)
                )
                command = c.Edit(request)
                reply = await self.runner.run(actor, command, {"channel": form.channel})
                told = self._text(reply, command) if reply.queue_position is None else None
                if reply.job is not None:
                    told = await self._after_command(actor, reply, form.channel) or told
                if told:
                    await self._tell(form.channel, user, told)
            except Exception:  # noqa: BLE001 - acked: tell the user, never go silent
                log.exception("the Vary (Region) form of #%s failed after the ack", form.job_id)
                await self._tell(form.channel, user, APOLOGY)
