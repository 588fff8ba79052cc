"""Jobs in Discord: each job has one status message, edited with its progress and then into its
result (or why it failed), so a retried delivery edits again instead of posting twice.

Where the status message lives:
- a root job started by a slash command: the interaction's own response (edited through the
  interaction token while it lives, 15 minutes);
- everything else (variations, upscales, rerolls, jobs from buttons or reactions): a message the
  bot posts with its own token, in the lineage's variation thread (or the channel), which it
  can edit for as long as it exists.
When the token has expired (or Discord says it is invalid), the result is posted as a new
channel message with the bot token, replying to the old status message; messages the bot
creates carry a nonce with `enforce_nonce`, so a send retried after a lost response, or a
delivery retried after a crash, returns the first message instead of posting a second one.

The command side (`announce`) and the delivery loop (`show_progress`, `deliver`) can race when
a render is quick: a per-job lock and a "finished" mark keep a late "queued" from overwriting a
result that is already there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import replace
from typing import Any

import discord

from bot import replies
from bot.discord.buttons import cancel_view, result_view
from bot.discord.formatting import NO_PINGS, escape, fit, job_file, message_link, result_text
from bot.discord.threads import VariationThreads, result_message
from engine.domain.types import GenerationStatus, MessageRole, Platform
from engine.domain.views import GenerationView, MessageRef
from engine.image_files import ImageStore
from engine.service import Deliveries

log = logging.getLogger(__name__)

TOKEN_LIFETIME_S = 15 * 60
TOKEN_MARGIN_S = 60  # stop using a token a minute early: an edit must not start and then 401
DEAD_TOKEN_CODES = {50027, 10015, 10062}  # invalid webhook token, unknown webhook, unknown interaction
FINISHED_MEMORY = 4096


def token_alive(target: dict[str, Any], now: float | None = None) -> bool:
    """Whether the interaction token in a reply target can still be used."""
    created = target.get("token_at")
    if not target.get("token") or created is None:
        return False
    return (now or time.time()) - float(created) < TOKEN_LIFETIME_S - TOKEN_MARGIN_S


def nonce(job_id: int, purpose: str) -> str:
    # ≤ 25 characters (Discord's limit): "imagine-" + a 12-digit id + "-r".
    return f"imagine-{job_id}-{purpose}"


def is_dead_token(error: discord.HTTPException) -> bool:
    return error.status == 401 or error.code in DEAD_TOKEN_CODES


class DiscordDelivery:
    """The `DeliveryTarget` for Discord, and the status messages the command side posts."""

    platform = Platform.DISCORD

    def __init__(self, client: discord.Client, deliveries: Deliveries, store: ImageStore) -> None:
        self.client = client
        self.deliveries = deliveries
        self.store = store
        self.threads = VariationThreads(client, deliveries)
        self._locks: dict[int, asyncio.Lock] = {}
        self._finished: OrderedDict[int, None] = OrderedDict()
        self._status: dict[int, tuple[int, int]] = {}  # job id → (channel id, message id)

    # --- the command side ---------------------------------------------------------------------

    async def announce(self, job: GenerationView, text: str, interaction: discord.Interaction | None) -> None:
        """Show a just-queued job ("queued, position 3", with ❌) where its result will appear."""
        target = job.reply_target
        async with self._lock(job.id):
            if job.id in self._finished:
                return  # rendered and delivered already: the result is showing
            message: discord.Message
            if target.get("status") == "original" and interaction is not None:
                channel_id = int(interaction.channel_id or target["channel_id"])
                known = interaction.extras.get("response_message_id")
                if known is not None:
                    # Recorded before it shows the ❌, so a reaction on it at once finds the job.
                    await self._record_status(job, channel_id, known)
                message = await interaction.edit_original_response(
                    content=fit(text), view=cancel_view(job.id), allowed_mentions=NO_PINGS
                )
            else:
                channel_id = await self._channel_for(job)
                message = await self._channel(channel_id, job).send(
                    fit(text), view=cancel_view(job.id), allowed_mentions=NO_PINGS, nonce=nonce(job.id, "s")
                )
                if interaction is not None:
                    link = message_link(job.team_external_id, channel_id, message.id)
                    await interaction.edit_original_response(
                        content=fit(f"{text}\nFollow it here: {link}"), allowed_mentions=NO_PINGS
                    )
            await self._record_status(job, channel_id, message.id)

    # --- DeliveryTarget -------------------------------------------------------------------------

    async def show_progress(self, job: GenerationView) -> None:
        if job.status == GenerationStatus.QUEUED:
            return  # the command's own reply already says "queued, position N"
        async with self._lock(job.id):
            if job.id in self._finished:
                return
            text = fit(replies.job_status(job, escape=escape))
            target = job.reply_target
            try:
                if target.get("status") == "original" and token_alive(target):
                    await self._webhook(target).edit_message(  # type: ignore[call-overload]  # discord.py types the id as int; "@original" is the API's own path
                        "@original", content=text, view=cancel_view(job.id), allowed_mentions=NO_PINGS
                    )
                    return
                status = await self._status_message(job)
                if status is not None:
                    await self._partial(status, job).edit(
                        content=text, view=cancel_view(job.id), allowed_mentions=NO_PINGS
                    )
            except discord.HTTPException as error:
                # Progress is best effort (the result is what matters); no traceback per tick.
                log.info("job %s: progress not shown: %s", job.id, error)

    async def deliver(self, job: GenerationView) -> None:
        async with self._lock(job.id):
            await self._deliver(job)
            self._finished[job.id] = None
            while len(self._finished) > FINISHED_MEMORY:
                self._finished.popitem(last=False)
        self._locks.pop(job.id, None)
        self._status.pop(job.id, None)

    async def _deliver(self, job: GenerationView) -> None:
        target = job.reply_target
        done = job.status == GenerationStatus.DONE
        parent_link = await self._parent_link(job) if done else None
        content = result_text(job, parent_link)
        view = result_view(job) if done else None
        upload_limit = target.get("upload_limit")
        status = await self._status_message(job)

        async def with_file() -> list[discord.File]:
            # A File is read once per request: make a fresh one for every attempt.
            file = await job_file(self.store, job, upload_limit) if done else None
            return [file] if file is not None else []

        posted = None
        if target.get("status") == "original" and token_alive(target):
            try:
                posted = await self._webhook(target).edit_message(  # type: ignore[call-overload]  # "@original", as above
                    "@original", content=content, attachments=await with_file(), view=view, allowed_mentions=NO_PINGS
                )
                channel_id = int(target["channel_id"])
            except discord.HTTPException as error:
                if not is_dead_token(error):
                    raise
                log.info("job %s: interaction token no longer valid; posting with the bot token", job.id)
        elif target.get("status") != "original" and status is not None:
            try:
                posted = await self._partial(status, job).edit(
                    content=content, attachments=await with_file(), view=view, allowed_mentions=NO_PINGS
                )
                channel_id = status[0]
            except discord.NotFound:
                log.info("job %s: its status message was deleted; posting the result anew", job.id)
                status = None

        if posted is None:
            channel_id = await self._channel_for(job)
            reference = None
            if status is not None and status[0] == channel_id:
                reference = discord.MessageReference(
                    message_id=status[1], channel_id=status[0], fail_if_not_exists=False
                )
            posted = await self._channel(channel_id, job).send(
                content,
                files=await with_file(),
                # send() takes None for both (its overloads do not say so; MISSING breaks reference)
                view=view,  # type: ignore[arg-type]
                allowed_mentions=NO_PINGS,
                nonce=nonce(job.id, "r"),
                reference=reference,  # type: ignore[arg-type]
                mention_author=False,
            )
            if status is not None and target.get("status") == "original":
                await self._point_to(job, status, message_link(job.team_external_id, channel_id, posted.id))

        if done and (status is None or posted.id != status[1]):
            # A status message edited into the result is already recorded (as "progress": a
            # message keeps the role it was first recorded with); a new message is recorded now.
            index = job.images[0].index if len(job.images) == 1 else None
            await self.deliveries.record_message(
                Platform.DISCORD, str(channel_id), str(posted.id), job.id, index, role=MessageRole.RESULT
            )
        if target.get("status") == "ack" and token_alive(target):
            link = message_link(job.team_external_id, channel_id, posted.id)
            try:
                await self._webhook(target).edit_message(  # type: ignore[call-overload]  # "@original", as above
                    "@original",
                    content=fit(f"{replies.job_status(job, escape=escape)}\n{link}"),
                    allowed_mentions=NO_PINGS,
                )
            except discord.HTTPException as error:
                log.info("job %s: could not update the button's reply: %s", job.id, error)

    # --- helpers ----------------------------------------------------------------------------

    async def _record_status(self, job: GenerationView, channel_id: int, message_id: int) -> None:
        if self._status.get(job.id) == (int(channel_id), int(message_id)):
            return
        self._status[job.id] = (int(channel_id), int(message_id))
        recorded = job.reply_target.get("status_message") or {}
        if (recorded.get("channel_id"), recorded.get("message_id")) == (str(channel_id), str(message_id)):
            return  # recorded with the job, in the submit's transaction
        await self.deliveries.record_message(
            Platform.DISCORD, str(channel_id), str(message_id), job.id, role=MessageRole.PROGRESS
        )

    def _lock(self, job_id: int) -> asyncio.Lock:
        if job_id not in self._locks and len(self._locks) >= FINISHED_MEMORY:
            # Jobs announced here but delivered by another replica never release theirs.
            for stale in [j for j, lock in self._locks.items() if not lock.locked()]:
                del self._locks[stale]
                self._status.pop(stale, None)
        return self._locks.setdefault(job_id, asyncio.Lock())

    def _webhook(self, target: dict[str, Any]) -> discord.Webhook:
        return discord.Webhook.partial(int(target["application_id"]), target["token"], client=self.client)

    def _channel(self, channel_id: int, job: GenerationView) -> discord.PartialMessageable:
        guild_id = int(job.team_external_id) if job.team_external_id.isdigit() else None
        return self.client.get_partial_messageable(channel_id, guild_id=guild_id)

    def _partial(self, status: tuple[int, int], job: GenerationView) -> discord.PartialMessage:
        return self._channel(status[0], job).get_partial_message(status[1])

    async def _channel_for(self, job: GenerationView) -> int:
        """The lineage's thread for a variation; otherwise the channel the job was asked in."""
        thread = await self.threads.channel_for(job)
        return thread if thread is not None else int(job.reply_target["channel_id"])

    async def _status_message(self, job: GenerationView) -> tuple[int, int] | None:
        if job.id in self._status:
            return self._status[job.id]
        for message in await self.deliveries.messages_for(job.id):
            if message.role == MessageRole.PROGRESS:
                self._status[job.id] = (int(message.channel_id), int(message.message_id))
                return self._status[job.id]
        return None

    async def message_image(self, channel_id: int, message_id: int) -> MessageRef | None:
        """One of our messages as it reads now, else None.

        A status message that was edited into its result is still recorded as "progress" (a
        message keeps the role it was first recorded with): once its job has finished it is
        read as the result it now shows, with the image index of a one-image job.
        """
        found = await self.deliveries.message_target(Platform.DISCORD, str(channel_id), str(message_id))
        if found is None or found.role != MessageRole.PROGRESS:
            return found
        job = await self.deliveries.generation(found.generation_id)
        if not job.status.is_final:
            return found
        index = job.images[0].index if len(job.images) == 1 else None
        return replace(found, image_index=index, role=MessageRole.RESULT)

    async def _parent_link(self, job: GenerationView) -> str | None:
        if job.parent_generation_id is None:
            return None
        found = await result_message(self.deliveries, job.parent_generation_id, job.parent_image_index)
        return message_link(job.team_external_id, *found) if found else None

    async def _point_to(self, job: GenerationView, status: tuple[int, int], link: str) -> None:
        """Turn an old status message into a pointer to the result posted below it."""
        try:
            await self._partial(status, job).edit(
                content=fit(f"{replies.job_title(job, escape)}: finished — {link}"),
                view=None,
                allowed_mentions=NO_PINGS,
            )
        except discord.HTTPException as error:
            log.info("job %s: old status message not updated: %s", job.id, error)
