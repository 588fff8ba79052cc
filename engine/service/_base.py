"""What every actor use case stands on: the deployment's policy, the queue, and the lookups the
use cases share (a job or image of the actor's team, moderator rights, the audit log)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from engine.domain.errors import InvalidState, NotFound, UsageError
from engine.domain.types import Actor, GenerationStatus, ImageRef
from engine.domain.views import GenerationView
from engine.image_files import ImageStore
from engine.store import repo
from engine.store.db import Database
from engine.store.models import AuditLogEntry, Generation, Image, Team, User, utcnow

log = logging.getLogger(__name__)


class JobQueue(Protocol):
    """Where job ids go to be rendered (Celery in production)."""

    def enqueue(self, generation_id: int, task_id: str) -> None:
        """Publish one job id; raise on any failure to reach the broker."""


@dataclass(frozen=True)
class ServicePolicy:
    """The deployment's knobs the use cases need."""

    default_model: str
    available_models: tuple[str, ...] = ()
    default_daily_images: int = 200
    max_prompt_chars: int = 1000
    max_steps: int = 100
    max_guidance: float = 30.0
    history_page_size: int = 10
    max_term_chars: int = 100
    max_upload_bytes: int = 10 * 1024 * 1024
    max_upload_pixels: int = 4096 * 4096
    #: A publish that has not returned by then counts as failed (the job is refunded); a
    #: broker that accepts connections but does not answer must not hold the user longer.
    enqueue_timeout_s: float = 5.0


def new_task_id() -> str:
    """The Celery task id, chosen before the row is written so one INSERT stores it."""
    return uuid.uuid4().hex


class ServiceBase:
    """The state and shared lookups of `ImagineService`; its use cases live in the mixins."""

    def __init__(
        self,
        db: Database,
        queue: JobQueue,
        policy: ServicePolicy,
        *,
        store: ImageStore | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.queue = queue
        self.policy = policy
        self.store = store
        self.clock = clock
        # Uploads decoded at once (each takes seconds of CPU and a large picture's memory).
        self._image_work = asyncio.Semaphore(2)

    @staticmethod
    def _is_moderator(team: Team, actor: Actor) -> bool:
        return actor.is_platform_admin or bool(set(actor.role_ids) & set(team.moderator_role_ids or []))

    def _audit(
        self,
        session: Session,
        team: Team,
        actor: User,
        action: str,
        target: str,
        details: dict[str, Any],
    ) -> None:
        session.add(
            AuditLogEntry(
                team_id=team.id,
                actor_id=actor.id,
                action=action,
                target=target,
                details=details,
                created_at=self.clock(),
            )
        )
        log.info("moderation: %s by %s on %s %s", action, actor.external_id, target, details)

    def _find_generation(
        self,
        session: Session,
        team: Team,
        user: User,
        generation_id: int | None,
        *,
        lock: bool = False,
        done_only: bool = False,
    ) -> Generation:
        if generation_id is None:
            generation = repo.latest_generation(session, user, done_only=done_only)
            if generation is None:
                if done_only:
                    raise NotFound("You have no finished jobs yet: start with `/imagine <prompt>`.")
                raise NotFound("You have no jobs yet: start with `/imagine <prompt>`.")
            if lock:
                locked = repo.get_generation(session, generation.id, lock=True)
                if locked is None:  # deleted between the two reads
                    raise NotFound(f"There is no job #{generation.id} in this team.")
                generation = locked
            return generation
        generation = repo.get_generation(session, generation_id, lock=lock)
        # Another team's job is reported as missing: ids must not leak across teams.
        if generation is None or generation.team_id != team.id:
            raise NotFound(f"There is no job #{generation_id} in this team.")
        return generation

    def _resolve_image(self, session: Session, team: Team, user: User, ref: ImageRef) -> Image:
        generation = self._find_generation(session, team, user, ref.generation_id, done_only=True)
        status = GenerationStatus(generation.status)
        if status != GenerationStatus.DONE:
            if status in (GenerationStatus.QUEUED, GenerationStatus.RUNNING):
                raise InvalidState(f"Job #{generation.id} is still {status}; try again when it is done.")
            raise InvalidState(f"Job #{generation.id} {status} and has no images.")
        count = len(generation.images)
        index = ref.index
        if index is None:
            if count != 1:
                raise UsageError(f"Job #{generation.id} has {count} images: say which, e.g. `{generation.id}:2`.")
            index = 1
        image = next((i for i in generation.images if i.index == index), None)
        if image is None:
            raise NotFound(f"Job #{generation.id} has no image {index} (it has {count}).")
        return image

    def _load_for_actor(self, session: Session, actor: Actor, generation_id: int | None) -> GenerationView:
        team, user = repo.ensure_actor(session, actor)
        return repo.generation_view(self._find_generation(session, team, user, generation_id))
