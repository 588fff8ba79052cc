"""What the service returns to adapters: plain, frozen snapshots of rows (no ORM objects)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.domain.types import GenerationKind, GenerationStatus, MessageRole, Platform


@dataclass(frozen=True)
class ImageView:
    id: int
    generation_id: int
    index: int
    storage_key: str
    width: int
    height: int
    seed: int


@dataclass(frozen=True)
class GenerationView:
    id: int
    kind: GenerationKind
    status: GenerationStatus
    platform: Platform
    team_external_id: str
    requester_external_id: str
    requester_name: str
    prompt: str
    negative_prompt: str | None
    params: dict[str, Any]
    seed: int
    model_id: str
    parent_generation_id: int | None
    parent_image_index: int | None
    thread_root_id: int | None
    reply_target: dict[str, Any]
    progress: float
    stage: str | None
    error: str | None
    cost: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    delivered_at: datetime | None
    grid_key: str | None
    render_ms: int | None = None
    images: tuple[ImageView, ...] = ()
    #: Claims for delivery so far: above 1, an earlier delivery may have posted part of it.
    delivery_attempts: int = 0

    @property
    def parent_label(self) -> str | None:
        if self.parent_generation_id is None:
            return None
        return f"#{self.parent_generation_id}:{self.parent_image_index}"


@dataclass(frozen=True)
class MessageRef:
    """A message the bot posted for a job, and what it is to that job."""

    channel_id: str
    message_id: str
    generation_id: int
    image_index: int | None  # None: the whole grid (or no image at all)
    role: MessageRole


@dataclass(frozen=True)
class SubmittedJob:
    generation: GenerationView
    queue_position: int  # 1 = next to render


@dataclass(frozen=True)
class HistoryPage:
    items: tuple[GenerationView, ...]
    page: int
    pages: int
    total: int


@dataclass(frozen=True)
class ThreadNode:
    generation: GenerationView
    children: tuple[ThreadNode, ...] = field(default_factory=tuple)

    def walk(self) -> Iterator[tuple[int, ThreadNode]]:
        """Yield (depth, node) depth-first, children in creation order."""
        stack: list[tuple[int, ThreadNode]] = [(0, self)]
        while stack:
            depth, node = stack.pop()
            yield depth, node
            stack.extend((depth + 1, child) for child in reversed(node.children))


@dataclass(frozen=True)
class QuotaStatus:
    limit: int | None  # None: unlimited
    used: int
    granted: int
    remaining: int | None
    period_start: datetime
    resets_at: datetime
    source: str  # where the limit came from: "user override", "role X", "team default", ...


@dataclass(frozen=True)
class AuditEntry:
    id: int
    created_at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]


@dataclass(frozen=True)
class ModerationResult:
    """What a moderator action did, in words fit to show them."""

    message: str


@dataclass(frozen=True)
class UsageRow:
    who: str  # a user's name/id or a role id
    jobs: int
    images: int


@dataclass(frozen=True)
class TeamStats:
    """What a team's imagine-bot did over the last `days` days."""

    days: int
    jobs: int
    images: int
    by_status: dict[str, int]
    failures: list[tuple[str, int]]  # (reason, count), most common first
    by_user: list[UsageRow]
    by_role: list[UsageRow]
