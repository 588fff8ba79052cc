"""How an interaction is answered: defer, refuse, answer, apologise, and start a job and show it.

Every interaction is answered within Discord's 3 seconds by doing nothing slow before the first
response: checks that need no database answer at once with an ephemeral error (`refuse`);
everything else defers first (`_defer`) and only then touches the database or the queue. Errors
a user can cause come back from the runner (or `_guarded`) as text; anything unexpected is
logged and answered with an apology (`answers_errors`). bot/discord/interactions.py builds the
commands on these steps.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bot import commands as c
from bot.discord.delivery import DiscordDelivery
from bot.discord.formatting import NO_PINGS, fit
from bot.discord.references import Reference
from bot.replies import APOLOGY, Reply
from bot.runner import CommandRunner
from engine.domain.errors import UsageError, UserFacingError
from engine.domain.types import Actor, ImageRef, MessageRole
from engine.domain.views import GenerationView
from engine.service import ImagineService

log = logging.getLogger(__name__)


def answers_errors(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Log an unexpected exception and apologise to the user instead of leaving them waiting."""

    @functools.wraps(method)
    async def wrapper(self: Responder, interaction: discord.Interaction, *args: Any, **kwargs: Any) -> None:
        try:
            await method(self, interaction, *args, **kwargs)
        except Exception:
            log.exception("interaction %s (%s) by %s failed", interaction.id, method.__name__, interaction.user.id)
            await self.apologise(interaction)
        finally:
            if interaction.extras.pop("working", False):
                self._working.release()

    return wrapper


class Responder:
    def __init__(
        self,
        service: ImagineService,
        runner: CommandRunner,
        delivery: DiscordDelivery,
        kick: Callable[[], None],
        *,
        max_working: int = 8,
    ) -> None:
        self.service = service
        self.runner = runner
        self.delivery = delivery
        self.kick = kick
        # Acknowledged commands worked on at once. A burst beyond it waits (each one already
        # deferred, so Discord and the user know it arrived) instead of crowding the event loop
        # and the database pool until new interactions cannot be deferred within 3 s.
        self._working = asyncio.Semaphore(max_working)

    async def _defer(self, interaction: discord.Interaction, *, ephemeral: bool) -> bool:
        try:
            callback = await interaction.response.defer(ephemeral=ephemeral, thinking=True)
        except discord.HTTPException as error:
            # Too late (over 3 s) or already answered: nothing can be said to this user now.
            log.warning("interaction %s: could not defer: %s", interaction.id, error)
            return False
        if callback is not None and callback.message_id is not None:
            interaction.extras["response_message_id"] = callback.message_id
        await self._working.acquire()  # released by @answers_errors when the handler ends
        interaction.extras["working"] = True
        return True

    def _target(self, interaction: discord.Interaction, status: str) -> dict[str, Any]:
        """Where the job's result goes, kept in the job row; `status` says which message shows it:
        "original" the interaction's own response, "ack" a message of the bot's (the
        interaction's reply only links to it)."""
        target: dict[str, Any] = {
            "status": status,
            "application_id": str(interaction.application_id),
            "token": interaction.token,
            "token_at": interaction.created_at.timestamp(),
            "channel_id": str(interaction.channel_id),
            "guild_id": str(interaction.guild_id),
            "user_id": str(interaction.user.id),
            "upload_limit": interaction.filesize_limit,
        }
        known = interaction.extras.get("response_message_id")
        if status == "original" and known is not None and interaction.channel_id is not None:
            # The deferred response is the job's status message: the submit records it with the
            # job, in its own transaction (DiscordDelivery.announce then writes nothing more).
            target["status_message"] = {"channel_id": str(interaction.channel_id), "message_id": str(known)}
        return target

    async def _start_job(
        self, interaction: discord.Interaction, actor: Actor, command: c.Command, *, status: str
    ) -> None:
        reply = await self.runner.run(actor, command, self._target(interaction, status))
        if reply.is_error or reply.job is None:
            await self._answer(interaction, reply, ephemeral=status != "original")
            return
        await self._announce(interaction, reply.job, reply.text)

    async def _announce(self, interaction: discord.Interaction, job: GenerationView, text: str) -> None:
        try:
            await self.delivery.announce(job, text, interaction)
        except discord.HTTPException as error:
            # The job is queued and charged either way; its result is still delivered.
            log.warning("job %s: status message not shown: %s", job.id, error)
        # No kick here: the worker's wake-ups say when the job starts and ends, and a sweep per
        # command would reload every active job for each of hundreds of commands a second.

    async def _resolve(self, reference: Reference) -> ImageRef:
        """An image reference, or a link to one of our messages turned into one."""
        if isinstance(reference, ImageRef):
            return reference
        found = await self.delivery.message_image(reference.channel_id, reference.message_id)
        if found is None or found.role not in (MessageRole.RESULT, MessageRole.COPY):
            raise UsageError("That link is not to one of imagine-bot's images.")
        return ImageRef(found.generation_id, reference.index or found.image_index)

    async def _guarded(self, work: Awaitable[Any]) -> Any:
        """Await a service call; a user-facing error becomes the Reply the runner would give."""
        try:
            return await work
        except UserFacingError as error:
            return Reply(error.message, ephemeral=True, is_error=True)

    async def _answer(self, interaction: discord.Interaction, reply: Reply, *, ephemeral: bool) -> None:
        text = fit(discord.utils.escape_mentions(reply.text) if reply.is_error else reply.text)
        if reply.is_error and not ephemeral:
            # The deferred "thinking" message is public: an error belongs to its author only.
            await interaction.delete_original_response()
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)
            return
        await interaction.edit_original_response(content=text, allowed_mentions=NO_PINGS)

    async def refuse(self, interaction: discord.Interaction, message: str) -> None:
        """Answer at once, only to the user (the first and only response)."""
        await interaction.response.send_message(
            fit(discord.utils.escape_mentions(message)), ephemeral=True, allowed_mentions=NO_PINGS
        )

    async def apologise(self, interaction: discord.Interaction) -> None:
        try:
            if interaction.response.is_done():
                await interaction.followup.send(APOLOGY, ephemeral=True, allowed_mentions=NO_PINGS)
            else:
                await interaction.response.send_message(APOLOGY, ephemeral=True, allowed_mentions=NO_PINGS)
        except discord.HTTPException:
            log.warning("interaction %s: the apology could not be sent either", interaction.id)
