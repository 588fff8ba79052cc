"""Acting on jobs and reading them back: cancel, remove a job's messages, look a job or an image
up, history, lineage threads, quota."""

from __future__ import annotations

import logging
import math

from sqlalchemy.orm import Session

from engine.domain.errors import InvalidState, NotPermitted, UsageError
from engine.domain.limits import MAX_HISTORY_PAGE
from engine.domain.types import Actor, GenerationStatus, ImageRef
from engine.domain.views import GenerationView, HistoryPage, ImageView, QuotaStatus, ThreadNode
from engine.service._base import ServiceBase
from engine.service._threads import build_thread_tree
from engine.store import repo

log = logging.getLogger(__name__)


class Jobs(ServiceBase):
    # --- acting on jobs ----------------------------------------------------------------------

    async def cancel(self, actor: Actor, generation_id: int | None) -> GenerationView:
        """Cancel a queued or running job (its requester or a moderator) and refund it."""
        return await self.db.run(self._cancel, actor, generation_id)

    def _cancel(self, session: Session, actor: Actor, generation_id: int | None) -> GenerationView:
        team, user = repo.ensure_actor(session, actor)
        generation = self._find_generation(session, team, user, generation_id, lock=True)
        if generation.requester_id != user.id and not self._is_moderator(team, actor):
            raise NotPermitted("Only the person who asked for this job, or a moderator, can cancel it.")
        status = GenerationStatus(generation.status)
        if status.is_final:
            raise InvalidState(f"Job #{generation.id} is already {status}; there is nothing to cancel.")
        generation.status = str(GenerationStatus.CANCELLED)
        generation.finished_at = self.clock()
        generation.error = f"cancelled by {actor.user_name or actor.user_id}"
        repo.refund(session, generation, f"cancelled by {actor.user_id}")
        log.info("job %s cancelled by %s/%s", generation.id, actor.platform, actor.user_id)
        session.flush()
        return repo.generation_view(generation)

    async def authorize_removal(self, actor: Actor, generation_id: int) -> GenerationView:
        """Allow removing a job's chat messages: its requester may, a moderator may (audited)."""
        return await self.db.run(self._authorize_removal, actor, generation_id)

    def _authorize_removal(self, session: Session, actor: Actor, generation_id: int) -> GenerationView:
        team, user = repo.ensure_actor(session, actor)
        generation = self._find_generation(session, team, user, generation_id)
        if generation.requester_id != user.id:
            if not self._is_moderator(team, actor):
                raise NotPermitted("Only the person who asked for this job, or a moderator, can remove it.")
            self._audit(session, team, user, "messages.remove", f"job #{generation.id}", {})
        return repo.generation_view(generation)

    async def job_for_actor(self, actor: Actor, generation_id: int | None) -> GenerationView:
        """A job of the actor's team (their latest one when no id is given)."""
        return await self.db.run(self._load_for_actor, actor, generation_id)

    async def image(self, actor: Actor, ref: ImageRef) -> tuple[GenerationView, ImageView]:
        """Resolve an image reference of the actor's team."""
        return await self.db.run(self._image_for_actor, actor, ref)

    def _image_for_actor(self, session: Session, actor: Actor, ref: ImageRef) -> tuple[GenerationView, ImageView]:
        team, user = repo.ensure_actor(session, actor)
        image = self._resolve_image(session, team, user, ref)
        return repo.generation_view(image.generation), repo.image_view(image)

    # --- reading history ---------------------------------------------------------------------

    async def history(self, actor: Actor, page: int = 1) -> HistoryPage:
        """One page of the actor's jobs, newest first."""
        if page < 1:
            raise UsageError(f"Pages start at 1, got {page}.")
        if page > MAX_HISTORY_PAGE:
            raise UsageError(f"There is no page {page}; history has at most {MAX_HISTORY_PAGE:,} pages.")
        return await self.db.run(self._history, actor, page)

    def _history(self, session: Session, actor: Actor, page: int) -> HistoryPage:
        _, user = repo.ensure_actor(session, actor)
        size = self.policy.history_page_size
        rows, total = repo.user_generations(session, user, offset=(page - 1) * size, limit=size)
        pages = max(1, math.ceil(total / size))
        if page > pages:
            raise UsageError(f"There are only {pages} page(s) of history.")
        return HistoryPage(tuple(repo.generation_view(g) for g in rows), page, pages, total)

    async def thread(self, actor: Actor, generation_id: int | None = None) -> ThreadNode:
        """The variation lineage tree that contains a job (from its root)."""
        return await self.db.run(self._thread, actor, generation_id)

    def _thread(self, session: Session, actor: Actor, generation_id: int | None) -> ThreadNode:
        team, user = repo.ensure_actor(session, actor)
        generation = self._find_generation(session, team, user, generation_id)
        root_id = generation.thread_root_id or generation.id
        members = [repo.generation_view(g) for g in repo.thread_members(session, root_id)]
        return build_thread_tree(root_id, members)

    async def quota(self, actor: Actor) -> QuotaStatus:
        """What the actor has left today and when it resets."""
        return await self.db.run(self._quota, actor)

    def _quota(self, session: Session, actor: Actor) -> QuotaStatus:
        team, user = repo.ensure_actor(session, actor)
        status, _ = repo.quota_status(
            session, team, user, actor.role_ids, self.policy.default_daily_images, self.clock()
        )
        return status

    async def team_id(self, actor: Actor) -> int:
        """The database id of the actor's team (what a gallery link is signed for; the gallery
        itself reads through `TeamGallery`)."""
        return await self.db.run(lambda session: repo.ensure_actor(session, actor)[0].id)
