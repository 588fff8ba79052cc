"""What a button press, a reaction or an uploaded file asks for, the same on every platform.

Adapters only translate: a Discord custom_id or Slack action_id becomes a `JobAction`, an emoji
becomes a `Reaction`, and the decisions — which command a press is, which image a reaction
varies, what ❌ does, whether a file is small enough — are made here, once.
"""

from __future__ import annotations

from enum import StrEnum

from bot import commands as c
from engine.domain.errors import InvalidState, UsageError
from engine.domain.types import (
    ACTIVE_STATUSES,
    Actor,
    EditRequest,
    ImageRef,
    MessageRole,
    RenderParams,
    VariationRequest,
)
from engine.domain.views import GenerationView
from engine.service import ImagineService


class JobAction(StrEnum):
    """The buttons under a job's messages (their meaning travels in the button's id)."""

    VARY = "vary"
    UPSCALE = "upscale"
    REROLL = "reroll"
    CANCEL = "cancel"
    ZOOM_OUT = "zoomout"
    PAN = "pan"


def command_for(action: JobAction, job_id: int, index: int | None, *, direction: str | None = None) -> c.Command:
    """The command a button press is: charged to whoever pressed it."""
    match action:
        case JobAction.VARY:
            return c.Vary(VariationRequest(ImageRef(job_id, index)))
        case JobAction.UPSCALE:
            return c.Upscale(ImageRef(job_id, index))
        case JobAction.REROLL:
            return c.Reroll(job_id)
        case JobAction.CANCEL:
            return c.Cancel(job_id)
        case JobAction.ZOOM_OUT:
            return c.Edit(
                EditRequest(ImageRef(job_id, index), {"op": "zoomout", "factor": 2.0}, params=RenderParams(n=4))
            )
        case JobAction.PAN:
            if direction not in ("left", "right", "up", "down"):
                raise UsageError("That button does not say which way to pan.")
            return c.Edit(
                EditRequest(ImageRef(job_id, index), {"op": "pan", "direction": direction}, params=RenderParams(n=4))
            )
    raise UsageError(f"Unknown button {action!r}.")


class Reaction(StrEnum):
    VARY = "vary"  # 🔁 / :repeat:, or a digit naming an image of a grid
    REMOVE = "remove"  # ❌ / :x:


def image_to_vary(
    job_id: int,
    role: MessageRole,
    message_index: int | None,
    digit: int | None,
    *,
    shows_grid: bool = False,
    digits: str = "1–4",
) -> ImageRef | None:
    """Which image a vary reaction on one of the bot's messages asks for; None when the reaction
    does not name one the message shows (a digit on a single image other than its own).
    `shows_grid`: the adapter knows the message shows several images (then a reaction without
    a digit is refused here, naming the platform's `digits`; otherwise the service decides)."""
    if role not in (MessageRole.RESULT, MessageRole.COPY, MessageRole.SHARE, MessageRole.FILE):
        raise InvalidState(f"Job #{job_id} has no images yet; react when it is done.")
    if shows_grid and message_index is None and digit is None:
        raise UsageError(f"That is a grid: react {digits} to say which image to vary.")
    if message_index is not None and digit is not None and digit != message_index:
        return None
    return ImageRef(job_id, digit or message_index)


async def remove(service: ImagineService, actor: Actor, job_id: int) -> tuple[GenerationView, bool]:
    """❌ on a job's message, by its requester or a moderator (audited): a job still waiting or
    rendering is cancelled (refunded) — its status message then says so; a finished one's messages
    in that channel are the adapter's to delete. Returns (the job, whether it was cancelled)."""
    job = await service.authorize_removal(actor, job_id)
    if job.status in ACTIVE_STATUSES:
        return await service.cancel(actor, job.id), True
    return job, False


def check_upload_size(size: int | None, limit: int) -> None:
    """Refuse a file by its declared size before downloading it."""
    if size is not None and size > limit:
        raise UsageError(f"That file is {size / 1e6:.1f} MB; images up to {limit / 1e6:.1f} MB are accepted.")
