"""Slash commands and buttons: acknowledge first, then translate, run, and answer.

Every interaction is answered within Discord's 3 seconds by doing nothing slow before the first
response: checks that need no database (option lengths and ranges, which Discord does not
enforce for the bot) answer at once with an ephemeral error; everything else defers first and
only then touches the database or the queue. Errors a user can cause come back from the runner
(or `_guarded`) as text; anything unexpected is logged and answered with an apology.

Who pays: the member in the interaction, always (a button press is charged to whoever pressed).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import discord
from discord import app_commands

from bot import commands as c
from bot import replies
from bot.actions import JobAction, check_upload_size, command_for
from bot.discord.actors import actor_from_interaction
from bot.discord.buttons import history_view
from bot.discord.delivery import DiscordDelivery
from bot.discord.formatting import CHOICE_LIMIT, NO_PINGS, escape, fit
from bot.discord.modals import form_values, region_form
from bot.replies import APOLOGY, Reply
from bot.runner import CommandRunner
from engine.domain.edits import EditSpec, check, parse_region
from engine.domain.errors import UsageError, UserFacingError
from engine.domain.types import (
    Actor,
    EditRequest,
    GenerationStatus,
    ImageRef,
    ImagineRequest,
    MessageRole,
    RenderParams,
    VariationRequest,
    normalise_prompt,
)
from engine.domain.views import GenerationView
from engine.service import ImagineService

log = logging.getLogger(__name__)

#: The letter a job button's custom_id carries (bot/discord/buttons.py) → what it asks for.
BUTTON_ACTIONS = {
    "v": JobAction.VARY,
    "u": JobAction.UPSCALE,
    "r": JobAction.REROLL,
    "x": JobAction.CANCEL,
    "z": JobAction.ZOOM_OUT,
    "p": JobAction.PAN,
}


# A link to a message imagine-bot posted, optionally followed by which image of a grid:
# "https://discord.com/channels/1/2/3 2" or ".../3:2".
_MESSAGE_LINK = re.compile(
    r"^https://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/channels/(?:\d+|@me)/(\d+)/(\d+)(?:[\s:#/]+([1-8]))?$"
)


def answers_errors(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Log an unexpected exception and apologise to the user instead of leaving them waiting."""

    @functools.wraps(method)
    async def wrapper(self: InteractionHandler, interaction: discord.Interaction, *args: Any, **kwargs: Any) -> None:
        try:
            await method(self, interaction, *args, **kwargs)
        except Exception:
            log.exception("interaction %s (%s) by %s failed", interaction.id, method.__name__, interaction.user.id)
            await self.apologise(interaction)
        finally:
            if interaction.extras.pop("working", False):
                self._working.release()

    return wrapper


class InteractionHandler:
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

    # --- jobs ---------------------------------------------------------------------------------

    @answers_errors
    async def imagine(self, interaction: discord.Interaction, request: ImagineRequest) -> None:
        """`/imagine`: a new root job, shown in the command's own (public) response."""
        try:
            actor = actor_from_interaction(interaction)
            self._check_request(request)
        except UsageError as error:
            await self.refuse(interaction, error.message)
            return
        if await self._defer(interaction, ephemeral=False):
            await self._start_job(interaction, actor, c.Imagine(request), status="original")

    @answers_errors
    async def vary(
        self,
        interaction: discord.Interaction,
        *,
        upload: discord.Attachment | None,
        image: str | None,
        params: RenderParams,
        seed: int | None,
        toward: str | None,
        amount: float | None,
    ) -> None:
        """`/vary`: variations of an uploaded file (a new root) or of one of our images (its lineage)."""
        try:
            actor = actor_from_interaction(interaction)
            if (upload is None) == (image is None):
                raise UsageError(
                    "Give either a file to upload or one of imagine-bot's images "
                    "(12:3, last:2, or a link to its message), not both."
                )
            params.validate(max_steps=self.service.policy.max_steps, max_guidance=self.service.policy.max_guidance)
            if toward is not None:
                if upload is not None:
                    raise UsageError("toward works on imagine-bot's own images, not on uploads.")
                normalise_prompt(toward, max_chars=self.service.policy.max_prompt_chars, what="The toward text")
            if upload is not None:
                check_upload_size(upload.size, self.service.policy.max_upload_bytes)
            reference = parse_reference(image) if image is not None else None
        except UsageError as error:
            await self.refuse(interaction, error.message)
            return
        if upload is not None:
            if await self._defer(interaction, ephemeral=False):
                await self._vary_upload(interaction, actor, upload, params, seed)
            return
        if not await self._defer(interaction, ephemeral=True):
            return
        assert reference is not None  # no upload, so an image was given (checked above)
        resolved = await self._guarded(self._resolve(reference))
        if isinstance(resolved, Reply):
            await self._answer(interaction, resolved, ephemeral=True)
            return
        command = c.Vary(VariationRequest(resolved, seed, params, toward, amount))
        await self._start_job(interaction, actor, command, status="ack")

    async def _vary_upload(
        self,
        interaction: discord.Interaction,
        actor: Actor,
        upload: discord.Attachment,
        params: RenderParams,
        seed: int | None,
    ) -> None:
        data = await upload.read()
        target = self._target(interaction, "original")
        submitted = await self._guarded(self.service.submit_upload_variation(actor, data, params, seed, target))
        if isinstance(submitted, Reply):
            await self._answer(interaction, submitted, ephemeral=False)
            return
        text = replies.job_status(submitted.generation, submitted.queue_position, escape)
        await self._announce(interaction, submitted.generation, text)

    @answers_errors
    async def blend(
        self,
        interaction: discord.Interaction,
        images: list[str],
        weights: str | None,
        params: RenderParams,
        seed: int | None,
        strip: int | None,
    ) -> None:
        """`/blend`: 2-4 of our images mixed (or a strip from one to another), in the first's lineage."""
        try:
            actor = actor_from_interaction(interaction)
            references = [parse_reference(text) for text in images]
            parsed_weights = parse_weights(weights, len(references)) if weights else None
            params.validate(max_steps=self.service.policy.max_steps, max_guidance=self.service.policy.max_guidance)
        except UsageError as error:
            await self.refuse(interaction, error.message)
            return
        if not await self._defer(interaction, ephemeral=True):
            return
        resolved: list[ImageRef] = []
        for reference in references:
            found = await self._guarded(self._resolve(reference))
            if isinstance(found, Reply):
                await self._answer(interaction, found, ephemeral=True)
                return
            resolved.append(found)
        command = c.Blend(tuple(resolved), parsed_weights, seed=seed, params=params, strip=strip)
        await self._start_job(interaction, actor, command, status="ack")

    @answers_errors
    async def job_button(
        self,
        interaction: discord.Interaction,
        action: str,
        job_id: int,
        index: int | None,
        direction: str | None = None,
    ) -> None:
        """V1–V4, U1–U4, 🔄, ❌, Zoom Out and pans: charged to whoever pressed, answered only to them."""
        try:
            actor = actor_from_interaction(interaction)
        except UsageError as error:
            await self.refuse(interaction, error.message)
            return
        if not await self._defer(interaction, ephemeral=True):
            return
        command = command_for(BUTTON_ACTIONS[action], job_id, index, direction=direction)
        if isinstance(command, c.Cancel):
            reply = await self.runner.run(actor, command)
            await self._answer(interaction, reply, ephemeral=True)
            self.kick()  # the delivery loop turns the status message into "cancelled"
            return
        await self._start_job(interaction, actor, command, status="ack")

    @answers_errors
    async def upscale(self, interaction: discord.Interaction, image: str) -> None:
        """`/upscale`: one image of a grid, larger, in its lineage."""
        try:
            actor = actor_from_interaction(interaction)
            reference = parse_reference(image)
        except UsageError as error:
            await self.refuse(interaction, error.message)
            return
        if not await self._defer(interaction, ephemeral=True):
            return
        resolved = await self._guarded(self._resolve(reference))
        if isinstance(resolved, Reply):
            await self._answer(interaction, resolved, ephemeral=True)
            return
        await self._start_job(interaction, actor, c.Upscale(resolved), status="ack")

    @answers_errors
    async def edit(
        self,
        interaction: discord.Interaction,
        image: str,
        *,
        op: str,
        region: str | None = None,
        box: str | None = None,
        prompt: str | None = None,
        factor: float | None = None,
        direction: str | None = None,
        n: int | None = None,
        seed: int | None = None,
    ) -> None:
        """`/edit`, `/zoomout`, `/pan` (and their buttons): a new job in the image's lineage."""
        try:
            actor = actor_from_interaction(interaction)
            reference = parse_reference(image)
            if op == "region":
                spec = region_spec(region, box)
            else:
                spec = check(EditSpec(op, factor=factor, direction=direction))
        except UsageError as error:
            await self.refuse(interaction, error.message)
            return
        await self._edit(interaction, actor, reference, spec, prompt, n=n, seed=seed)

    @answers_errors
    async def open_region_form(self, interaction: discord.Interaction, job_id: int, index: int | None) -> None:
        """🖌️ Vary (Region) under a single image: the form (bot/discord/modals.py) is the answer."""
        if index is None:
            await self.refuse(interaction, "That button does not say which image to edit.")
            return
        form = region_form(job_id, index, max_prompt_chars=self.service.policy.max_prompt_chars)
        try:
            await interaction.response.send_modal(form)
        except discord.HTTPException as error:
            log.info("interaction %s: the form could not be opened: %s", interaction.id, error)

    @answers_errors
    async def region_form_submitted(self, interaction: discord.Interaction, job_id: int, index: int) -> None:
        """The Vary (Region) form, sent: an edit of image `index` of job `job_id`, like `/edit`."""
        answers = form_values(interaction.data)
        try:
            actor = actor_from_interaction(interaction)
            spec = region_spec(answers.get("region") or None, answers.get("box", "").strip() or None)
        except UsageError as error:
            await self.refuse(interaction, error.message)
            return
        await self._edit(interaction, actor, ImageRef(job_id, index), spec, answers.get("prompt"))

    async def _edit(
        self,
        interaction: discord.Interaction,
        actor: Actor,
        reference: ImageRef | tuple[int, int, int | None],
        spec: EditSpec,
        prompt: str | None,
        *,
        n: int | None = None,
        seed: int | None = None,
    ) -> None:
        if not await self._defer(interaction, ephemeral=True):
            return
        resolved = await self._guarded(self._resolve(reference))
        if isinstance(resolved, Reply):
            await self._answer(interaction, resolved, ephemeral=True)
            return
        request = EditRequest(resolved, spec.to_dict(), prompt, seed, RenderParams(n=n or 4))
        await self._start_job(interaction, actor, c.Edit(request), status="ack")

    @answers_errors
    async def job_command(self, interaction: discord.Interaction, command: c.Command) -> None:
        """`/reroll`: a new job from an old one, shown like a button's."""
        try:
            actor = actor_from_interaction(interaction)
        except UsageError as error:
            await self.refuse(interaction, error.message)
            return
        if await self._defer(interaction, ephemeral=True):
            await self._start_job(interaction, actor, command, status="ack")

    # --- everything else ----------------------------------------------------------------------

    @answers_errors
    async def run(self, interaction: discord.Interaction, command: c.Command, *, ephemeral: bool) -> None:
        """A command that answers with text: /thread, /quota, /help."""
        try:
            actor = actor_from_interaction(interaction)
        except UsageError as error:
            await self.refuse(interaction, error.message)
            return
        if await self._defer(interaction, ephemeral=ephemeral):
            reply = await self.runner.run(actor, command)
            await self._answer(interaction, reply, ephemeral=ephemeral)

    async def admin(self, interaction: discord.Interaction, command: c.Command) -> None:
        """`/imagine-admin ...`: the typed options are the command; the service checks its values
        and the moderator's rights, with the same messages as in Slack and the console."""
        await self.run(interaction, command, ephemeral=True)

    @answers_errors
    async def history(self, interaction: discord.Interaction, page: int) -> None:
        """`/history`: one page of your jobs, only to you, with ◀ ▶ buttons."""
        try:
            actor = actor_from_interaction(interaction)
        except UsageError as error:
            await self.refuse(interaction, error.message)
            return
        if await self._defer(interaction, ephemeral=True):
            await self._show_history(interaction, actor, page)

    @answers_errors
    async def history_page(self, interaction: discord.Interaction, page: int) -> None:
        """◀ / ▶ on a /history message: edit it to show another page."""
        actor = actor_from_interaction(interaction)
        await interaction.response.defer()  # "updating this message", no new one
        await self._show_history(interaction, actor, page)

    async def _show_history(self, interaction: discord.Interaction, actor: Actor, page: int) -> None:
        shown = await self._guarded(self.service.history(actor, page))
        if isinstance(shown, Reply):
            await interaction.edit_original_response(content=fit(shown.text), view=None, allowed_mentions=NO_PINGS)
            return
        await interaction.edit_original_response(
            content=fit(replies.history_text(shown, escape)), view=history_view(shown), allowed_mentions=NO_PINGS
        )

    # --- autocomplete -------------------------------------------------------------------------

    async def image_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """Your recent finished images, as `12:3` choices labelled with their prompt."""
        try:
            page = await self.service.history(actor_from_interaction(interaction), 1)
        except UserFacingError:
            return []
        choices = []
        for job in page.items:
            if job.status != GenerationStatus.DONE:
                continue
            for image in job.images:
                value = f"{job.id}:{image.index}" if len(job.images) > 1 else str(job.id)
                name = replies.shorten(f"#{job.id}:{image.index} {job.prompt}", CHOICE_LIMIT)
                if current.strip().lower() in name.lower():
                    choices.append(app_commands.Choice(name=name, value=value))
        return choices[:25]

    async def model_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        models = self.service.policy.available_models or (self.service.policy.default_model,)
        return [
            app_commands.Choice(name=m[:CHOICE_LIMIT], value=m[:CHOICE_LIMIT])
            for m in models
            if current.lower() in m.lower()
        ][:25]

    # --- the steps ------------------------------------------------------------------------------

    def _check_request(self, request: ImagineRequest) -> None:
        """The checks that need no database, so a bad command is refused before anything else."""
        policy = self.service.policy
        normalise_prompt(request.prompt, max_chars=policy.max_prompt_chars)
        if request.negative_prompt is not None and request.negative_prompt.strip():
            normalise_prompt(request.negative_prompt, max_chars=policy.max_prompt_chars, what="Negative prompt")
        request.params.validate(max_steps=policy.max_steps, max_guidance=policy.max_guidance)

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
        return {
            "status": status,
            "application_id": str(interaction.application_id),
            "token": interaction.token,
            "token_at": interaction.created_at.timestamp(),
            "channel_id": str(interaction.channel_id),
            "guild_id": str(interaction.guild_id),
            "user_id": str(interaction.user.id),
            "upload_limit": interaction.filesize_limit,
        }

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

    async def _resolve(self, reference: ImageRef | tuple[int, int, int | None]) -> ImageRef:
        """An image reference, or a link to one of our messages turned into one."""
        if isinstance(reference, ImageRef):
            return reference
        channel_id, message_id, index = reference
        found = await self.delivery.message_image(channel_id, message_id)
        if found is None or found.role not in (MessageRole.RESULT, MessageRole.COPY):
            raise UsageError("That link is not to one of imagine-bot's images.")
        return ImageRef(found.generation_id, index or found.image_index)

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


def region_spec(region: str | None, box: str | None) -> EditSpec:
    """A region edit from a named region or a box X,Y,W,H (exactly one of them)."""
    if (region is None) == (box is None):
        raise UsageError("Give either a region (left, right, …) or a box X,Y,W,H, not both.")
    return EditSpec("region", parse_region(box or region or ""))


def parse_reference(text: str) -> ImageRef | tuple[int, int, int | None]:
    """`12:3`, `12`, `last:2`, or a link to one of imagine-bot's messages (+ which image)."""
    text = text.strip()
    if match := _MESSAGE_LINK.match(text):
        channel_id, message_id, index = match.groups()
        return int(channel_id), int(message_id), int(index) if index else None
    return c.parse_image_ref(text)


def parse_weights(text: str, count: int) -> tuple[float, ...]:
    try:
        weights = tuple(float(w) for w in text.replace(",", " ").split())
    except ValueError:
        raise UsageError(f"weights must be numbers like `1, 2`, got {text!r}.") from None
    if len(weights) != count:
        raise UsageError(f"Give one weight per image ({count}), got {len(weights)}.")
    if any(not 0 <= w <= 100 for w in weights):
        raise UsageError("Each weight must be between 0 and 100.")
    return weights
