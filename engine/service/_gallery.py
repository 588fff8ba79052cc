"""The team gallery's reads (bot/gallery/): by team id, read-only. No actor here: access is
checked by the gallery's signed link, which names the team.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from engine.domain.errors import NotFound
from engine.domain.views import GenerationView, ImageView, ThreadNode
from engine.service._threads import build_thread_tree
from engine.store import repo
from engine.store.db import Database


class TeamGallery:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def team_gallery(
        self, team_id: int, *, query: str = "", user: str | None = None, limit: int = 60
    ) -> list[GenerationView]:
        """A team's finished jobs, newest first, optionally by one user or matching a prompt."""

        def read(session: Session) -> list[GenerationView]:
            rows = repo.team_generations(
                session,
                team_id,
                words=query.split()[:8],
                user_external_id=user,
                limit=max(1, min(limit, 200)),
            )
            return [repo.generation_view(g) for g in rows]

        return await self.db.run(read)

    async def team_thread(self, team_id: int, generation_id: int) -> ThreadNode:
        """The lineage tree containing a job of this team."""

        def read(session: Session) -> ThreadNode:
            generation = repo.get_generation(session, generation_id)
            if generation is None or generation.team_id != team_id:
                raise NotFound(f"There is no job #{generation_id} in this team.")
            root_id = generation.thread_root_id or generation.id
            members = [repo.generation_view(g) for g in repo.thread_members(session, root_id)]
            return build_thread_tree(root_id, members)

        return await self.db.run(read)

    async def team_image(self, team_id: int, image_id: int) -> ImageView:
        """One image of this team (NotFound for any other team's)."""

        def read(session: Session) -> ImageView:
            image = repo.get_image(session, image_id)
            if image is None or image.generation.team_id != team_id:
                raise NotFound("No such image.")
            return repo.image_view(image)

        return await self.db.run(read)
