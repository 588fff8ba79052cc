"""Rows → the frozen views the service hands to adapters (no ORM object leaves the store)."""

from __future__ import annotations

from typing import Any

from engine.domain.types import GenerationKind, GenerationStatus, MessageRole, Platform
from engine.domain.views import GenerationView, ImageView, MessageRef
from engine.store.models import ChatMessage, Generation, Image


def image_view(image: Image) -> ImageView:
    return ImageView(
        id=image.id,
        generation_id=image.generation_id,
        index=image.index,
        storage_key=image.storage_key,
        width=image.width,
        height=image.height,
        seed=image.seed,
    )


def message_ref(message: ChatMessage) -> MessageRef:
    return MessageRef(
        channel_id=message.channel_id,
        message_id=message.message_id,
        generation_id=message.generation_id,
        image_index=message.image_index,
        role=MessageRole(message.role),
    )


def generation_view(generation: Generation) -> GenerationView:
    parent = generation.parent_image
    return GenerationView(
        id=generation.id,
        kind=GenerationKind(generation.kind),
        status=GenerationStatus(generation.status),
        platform=Platform(generation.platform),
        team_external_id=generation.team.external_id,
        requester_external_id=generation.requester.external_id,
        requester_name=generation.requester.display_name,
        prompt=generation.prompt,
        negative_prompt=generation.negative_prompt,
        params=dict(generation.params or {}),
        seed=generation.seed,
        model_id=generation.model_id,
        parent_generation_id=parent.generation_id if parent else None,
        parent_image_index=parent.index if parent else None,
        thread_root_id=generation.thread_root_id,
        reply_target=dict(generation.reply_target or {}),
        progress=generation.progress,
        stage=generation.stage,
        error=generation.error,
        cost=generation.cost,
        created_at=generation.created_at,
        started_at=generation.started_at,
        finished_at=generation.finished_at,
        delivered_at=generation.delivered_at,
        delivery_attempts=generation.delivery_attempts or 0,
        grid_key=generation.grid_key,
        render_ms=generation.render_ms,
        images=tuple(image_view(i) for i in generation.images),
    )


def new_generation_view(
    generation_id: int,
    values: dict[str, Any],
    *,
    team_external_id: str,
    requester_external_id: str,
    requester_name: str,
    parent: Image | None,
) -> GenerationView:
    """The view of a job just written with `values` (`insert_generation`): what
    `generation_view` would read back from its row, without reading it."""
    return GenerationView(
        id=generation_id,
        kind=GenerationKind(values["kind"]),
        status=GenerationStatus(values["status"]),
        platform=Platform(values["platform"]),
        team_external_id=team_external_id,
        requester_external_id=requester_external_id,
        requester_name=requester_name,
        prompt=values["prompt"],
        negative_prompt=values["negative_prompt"],
        params=dict(values["params"] or {}),
        seed=values["seed"],
        model_id=values["model_id"],
        parent_generation_id=parent.generation_id if parent else None,
        parent_image_index=parent.index if parent else None,
        thread_root_id=values["thread_root_id"],
        reply_target=dict(values["reply_target"] or {}),
        progress=values["progress"],
        stage=None,
        error=None,
        cost=values["cost"],
        created_at=values["created_at"],
        started_at=None,
        finished_at=None,
        delivered_at=None,
        delivery_attempts=values["delivery_attempts"],
        grid_key=None,
        render_ms=None,
        images=(),
    )
