"""Reactions on imagine-bot's messages: 🔁 / 1️⃣–4️⃣ vary, ❌ removes or cancels, ✉️ sends to DMs.

They arrive as `raw_reaction_add` (the bot keeps no message cache); the message is found with
`Deliveries.message_target`, which knows every message the bot posted. A reaction has no reply
of its own, so a refusal ("no quota left") is a short notice in the channel, replying to the
reacted-to message, naming the member without pinging them, and deleted after a minute.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import discord

from bot import commands as c
from bot.actions import image_to_vary, remove
from bot.discord.actors import actor_from_reaction
from bot.discord.delivery import DiscordDelivery
from bot.discord.formatting import NO_PINGS, details_text, fit, job_file
from bot.runner import CommandRunner
from engine.domain.errors import InvalidState, UserFacingError
from engine.domain.types import Actor, GenerationStatus, MessageRole, Platform, VariationRequest
from engine.image_files import ImageStore
from engine.service import Deliveries, ImagineService

log = logging.getLogger(__name__)

REPEAT = "🔁"
REMOVE = "❌"
DIGITS = {f"{d}\ufe0f\u20e3": d for d in range(1, 9)} | {f"{d}\u20e3": d for d in range(1, 9)}
MAIL = {"✉️", "✉", "📩", "📧"}


def reaction_action(emoji: discord.PartialEmoji) -> str | None:
    if not emoji.is_unicode_emoji():
        return None
    name = emoji.name
    if name == REPEAT or name in DIGITS:
        return "vary"
    if name == REMOVE:
        return "remove"
    if name in MAIL:
        return "mail"
    return None


class ReactionHandler:
    def __init__(
        self,
        client: discord.Client,
        service: ImagineService,
        deliveries: Deliveries,
        runner: CommandRunner,
        delivery: DiscordDelivery,
        store: ImageStore,
        *,
        notice_ttl_s: float,
        kick: Callable[[], None],
    ) -> None:
        self.client = client
        self.service = service
        self.deliveries = deliveries
        self.runner = runner
        self.delivery = delivery
        self.store = store
        self.notice_ttl_s = notice_ttl_s
        self.kick = kick

    async def handle(self, payload: discord.RawReactionActionEvent) -> None:
        if self.client.user is not None and payload.user_id == self.client.user.id:
            return
        action = reaction_action(payload.emoji)
        if action is None:
            return  # any other emoji is just a reaction: no database work for it
        found = await self.delivery.message_image(payload.channel_id, payload.message_id)
        if found is None:
            return  # not one of our messages
        job_id, index, role = found.generation_id, found.image_index, found.role
        try:
            team = (
                str(payload.guild_id)
                if payload.guild_id
                else (await self.deliveries.generation(job_id)).team_external_id
            )
            actor = actor_from_reaction(payload, team)
            if action == "vary":
                await self._vary(payload, actor, job_id, index, role)
            elif action == "remove":
                await self._remove(payload, actor, job_id, role)
            else:
                await self._mail(payload, actor, job_id, index)
        except UserFacingError as error:
            await self._notice(payload, error.message)
        except Exception:
            log.exception("reaction %s on message %s (job %s) failed", payload.emoji, payload.message_id, job_id)

    async def _vary(
        self, payload: discord.RawReactionActionEvent, actor: Actor, job_id: int, index: int | None, role: MessageRole
    ) -> None:
        # Our result and copy messages name their image unless they show a grid.
        image = image_to_vary(
            job_id, role, index, DIGITS.get(payload.emoji.name or ""), shows_grid=index is None, digits="1️⃣–4️⃣"
        )
        if image is None:
            return  # a number on a single image: not a request we can read
        target = {
            "status": "channel",
            "channel_id": str(payload.channel_id),
            "guild_id": str(payload.guild_id or ""),
            "user_id": str(payload.user_id),
        }
        reply = await self.runner.run(actor, c.Vary(VariationRequest(image)), target)
        if reply.is_error or reply.job is None:
            await self._notice(payload, reply.text)
            return
        try:
            await self.delivery.announce(reply.job, reply.text, None)
        except discord.HTTPException as error:
            log.warning("job %s: status message not shown: %s", reply.job.id, error)

    async def _remove(
        self, payload: discord.RawReactionActionEvent, actor: Actor, job_id: int, role: MessageRole
    ) -> None:
        if role == MessageRole.COPY:  # a copy in someone's DMs is theirs to remove
            await self._delete(payload.channel_id, payload.message_id)
            return
        job, cancelled = await remove(self.service, actor, job_id)
        if cancelled:
            self.kick()  # the delivery loop turns the status message into "cancelled"
            return
        for message in await self.deliveries.messages_for(job.id):
            if message.channel_id == str(payload.channel_id):
                await self._delete(payload.channel_id, int(message.message_id))
        log.info("job %s: messages in %s removed by %s", job_id, payload.channel_id, payload.user_id)

    async def _delete(self, channel_id: int, message_id: int) -> None:
        with contextlib.suppress(discord.NotFound):  # already gone
            await self.client.get_partial_messageable(channel_id).get_partial_message(message_id).delete()

    async def _mail(
        self, payload: discord.RawReactionActionEvent, actor: Actor, job_id: int, index: int | None
    ) -> None:
        job = await self.service.job_for_actor(actor, job_id)
        if job.status != GenerationStatus.DONE:
            raise InvalidState(f"Job #{job.id} is {job.status}: there is nothing to send yet.")
        file = await job_file(self.store, job, None)
        try:
            channel = await self.client.create_dm(discord.Object(payload.user_id))
            message = await channel.send(details_text(job), files=[file] if file else [], allowed_mentions=NO_PINGS)
        except discord.Forbidden:
            raise InvalidState("I cannot send you DMs: allow direct messages from this server's members.") from None
        await self.deliveries.record_message(
            Platform.DISCORD,
            str(channel.id),
            str(message.id),
            job.id,
            job.images[0].index if len(job.images) == 1 else None,
            role=MessageRole.COPY,
        )

    async def _notice(self, payload: discord.RawReactionActionEvent, text: str) -> None:
        channel = self.client.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id)
        reference = discord.MessageReference(
            message_id=payload.message_id, channel_id=payload.channel_id, fail_if_not_exists=False
        )
        body = fit(f"<@{payload.user_id}> {discord.utils.escape_mentions(text)}")
        try:
            await channel.send(
                body,
                reference=reference,
                allowed_mentions=NO_PINGS,
                mention_author=False,
                delete_after=self.notice_ttl_s,
            )
        except discord.HTTPException as error:
            log.info("notice for %s not posted: %s", payload.user_id, error)
