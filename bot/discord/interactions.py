"""Slash commands, buttons, forms and the Vary context menu: acknowledge first, then translate,
run, and answer (the steps, and the 3-second rule they keep, are bot/discord/responses.py's).

Checks that need no database (option lengths and ranges, which Discord does not enforce for the
bot) answer at once with an ephemeral error; everything else defers first.

Who pays: the member in the interaction, always (a button press is charged to whoever pressed).
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands

from bot import commands as c
from bot import replies
from bot.actions import JobAction, check_upload_size, command_for
from bot.discord.actors import actor_from_interaction
from bot.discord.buttons import history_view
from bot.discord.formatting import CHOICE_LIMIT, NO_PINGS, escape, fit
from bot.discord.modals import form_values, region_form
from bot.discord.references import Reference
from bot.discord.responses import Responder, answers_errors
from bot.replies import Reply
from engine.domain.edits import EditSpec, check, region_edit
from engine.domain.errors import UsageError
from engine.domain.types import (
    Actor,
    EditRequest,
    ImageRef,
    ImagineRequest,
    MessageRole,
    RenderParams,
    VariationRequest,
    normalise_prompt,
)

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


class InteractionHandler(Responder):
    """What each slash command, button, form and context menu does."""

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
        image: Reference | None,
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
        except UsageError as error:
            await self.refuse(interaction, error.message)
            return
        if upload is not None:
            if await self._defer(interaction, ephemeral=False):
                await self._vary_upload(interaction, actor, upload, params, seed)
            return
        if not await self._defer(interaction, ephemeral=True):
            return
        assert image is not None  # no upload, so an image was given (checked above)
        resolved = await self._guarded(self._resolve(image))
        if isinstance(resolved, Reply):
            await self._answer(interaction, resolved, ephemeral=True)
            return
        command = c.Vary(VariationRequest(resolved, seed, params, toward, amount))
        await self._start_job(interaction, actor, command, status="ack")

    @answers_errors
    async def vary_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Apps → Vary on one of imagine-bot's single images: its variations, in its lineage."""
        try:
            actor = actor_from_interaction(interaction)
        except UsageError as error:
            await self.refuse(interaction, error.message)
            return
        if not await self._defer(interaction, ephemeral=True):
            return
        found = await self.delivery.message_image(message.channel.id, message.id)
        problem = None
        if found is None or found.role not in (MessageRole.RESULT, MessageRole.COPY):
            problem = "That is not one of imagine-bot's images."
        elif found.image_index is None:
            problem = "That is a grid: press V1–V4 under it to say which image to vary."
        if problem is not None or found is None:
            await self._answer(interaction, Reply(problem or "", ephemeral=True, is_error=True), ephemeral=True)
            return
        command = c.Vary(VariationRequest(ImageRef(found.generation_id, found.image_index)))
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
        images: list[Reference],
        weights: str | None,
        params: RenderParams,
        seed: int | None,
        strip: int | None,
    ) -> None:
        """`/blend`: 2-4 of our images mixed (or a strip from one to another), in the first's lineage."""
        try:
            actor = actor_from_interaction(interaction)
            parsed_weights = parse_weights(weights, len(images)) if weights else None
            params.validate(max_steps=self.service.policy.max_steps, max_guidance=self.service.policy.max_guidance)
        except UsageError as error:
            await self.refuse(interaction, error.message)
            return
        if not await self._defer(interaction, ephemeral=True):
            return
        resolved: list[ImageRef] = []
        for reference in images:
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
    async def upscale(self, interaction: discord.Interaction, image: Reference) -> None:
        """`/upscale`: one image of a grid, larger, in its lineage."""
        try:
            actor = actor_from_interaction(interaction)
        except UsageError as error:
            await self.refuse(interaction, error.message)
            return
        if not await self._defer(interaction, ephemeral=True):
            return
        resolved = await self._guarded(self._resolve(image))
        if isinstance(resolved, Reply):
            await self._answer(interaction, resolved, ephemeral=True)
            return
        await self._start_job(interaction, actor, c.Upscale(resolved), status="ack")

    @answers_errors
    async def edit(
        self,
        interaction: discord.Interaction,
        image: Reference,
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
            if op == "region":
                spec = region_edit(region, box)
            else:
                spec = check(EditSpec(op, factor=factor, direction=direction))
        except UsageError as error:
            await self.refuse(interaction, error.message)
            return
        await self._edit(interaction, actor, image, spec, prompt, n=n, seed=seed)

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
            spec = region_edit(answers.get("region") or None, answers.get("box", "").strip() or None)
        except UsageError as error:
            await self.refuse(interaction, error.message)
            return
        await self._edit(interaction, actor, ImageRef(job_id, index), spec, answers.get("prompt"))

    async def _edit(
        self,
        interaction: discord.Interaction,
        actor: Actor,
        reference: Reference,
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
