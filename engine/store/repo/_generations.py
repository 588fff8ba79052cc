"""Jobs (generations) and their images: lookups, history, lineage threads, the gallery's search,
statistics."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session, lazyload

from engine.domain.limits import MAX_ID
from engine.domain.types import GenerationStatus
from engine.store.models import Generation, Image, Team, User


def get_generation(
    session: Session, generation_id: int, *, lock: bool = False, images: bool = True
) -> Generation | None:
    if not 1 <= generation_id <= MAX_ID:
        return None  # no such row can exist (and PostgreSQL would refuse the comparison)
    query = select(Generation).where(Generation.id == generation_id)
    if lock:
        query = query.with_for_update(of=Generation).execution_options(populate_existing=True)
    if not images:
        query = query.options(lazyload(Generation.images))
    return session.scalars(query).unique().one_or_none()


def latest_generation(session: Session, user: User, *, done_only: bool = False) -> Generation | None:
    query = select(Generation).where(Generation.requester_id == user.id)
    if done_only:
        query = query.where(Generation.status == str(GenerationStatus.DONE))
    return session.scalars(query.order_by(Generation.id.desc()).limit(1)).unique().one_or_none()


def queue_position(session: Session, generation: Generation) -> int:
    """1 + the number of queued or running jobs ahead of this one."""
    ahead = session.scalar(
        select(func.count())
        .select_from(Generation)
        .where(
            Generation.status.in_([GenerationStatus.QUEUED, GenerationStatus.RUNNING]),
            Generation.id < generation.id,
        )
    )
    return int(ahead or 0) + 1


def user_generations(session: Session, user: User, *, offset: int, limit: int) -> tuple[Sequence[Generation], int]:
    total = session.scalar(select(func.count()).select_from(Generation).where(Generation.requester_id == user.id))
    rows = (
        session.scalars(
            select(Generation)
            .where(Generation.requester_id == user.id)
            .order_by(Generation.id.desc())
            .offset(offset)
            .limit(limit)
        )
        .unique()
        .all()
    )
    return rows, int(total or 0)


def thread_members(session: Session, root_id: int) -> Sequence[Generation]:
    return (
        session.scalars(
            select(Generation)
            .where((Generation.id == root_id) | (Generation.thread_root_id == root_id))
            .order_by(Generation.id)
        )
        .unique()
        .all()
    )


def team_generations(
    session: Session,
    team_id: int,
    *,
    words: Sequence[str] = (),
    user_external_id: str | None = None,
    limit: int,
) -> Sequence[Generation]:
    """A team's finished jobs, newest first: only those whose prompt contains every word (in
    any case), and only one user's, when given."""
    query = (
        select(Generation)
        .where(Generation.team_id == team_id, Generation.status == str(GenerationStatus.DONE))
        .order_by(Generation.id.desc())
        .limit(limit)
    )
    for word in words:
        query = query.where(Generation.prompt.ilike(f"%{_escape_like(word)}%", escape="\\"))
    if user_external_id is not None:
        query = query.join(User, Generation.requester_id == User.id).where(User.external_id == user_external_id)
    return session.scalars(query).unique().all()


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class TeamJobRow(NamedTuple):
    """One job as statistics read it."""

    status: str
    cost: int
    error: str | None
    role_ids: list[str] | None
    display_name: str | None
    external_id: str


def team_jobs_since(session: Session, team: Team, since: datetime) -> list[TeamJobRow]:
    """Each of a team's jobs created since `since`, for statistics. Typed here rather than as
    SQLAlchemy's Row, whose generic parameters differ between 2.0 and 2.1."""
    rows = session.execute(
        select(
            Generation.status,
            Generation.cost,
            Generation.error,
            Generation.requester_role_ids,
            User.display_name,
            User.external_id,
        )
        .join(User, Generation.requester_id == User.id)
        .where(Generation.team_id == team.id, Generation.created_at >= since)
    ).all()
    return [TeamJobRow(*row) for row in rows]


def get_image(session: Session, image_id: int) -> Image | None:
    if not 1 <= image_id <= MAX_ID:
        return None  # no such row can exist (and PostgreSQL would refuse the comparison)
    return session.get(Image, image_id)


def find_image(session: Session, generation_id: int, index: int) -> Image | None:
    return session.scalar(select(Image).where(Image.generation_id == generation_id, Image.index == index))


#: Built once: the values travel as parameters, so each INSERT reuses the compiled statement.
_INSERT_GENERATION = insert(cast(Table, Generation.__table__)).returning(Generation.__table__.c.id)


def insert_generation(session: Session, values: dict[str, Any]) -> int:
    """Write a new job row in one INSERT and return its id (no unit of work: the submit builds
    its view from what it wrote)."""
    return int(session.execute(_INSERT_GENERATION, values).scalar_one())
