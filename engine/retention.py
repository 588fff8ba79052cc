"""Retention and export: delete what a team's policy says is too old; hand a user's history or
a thread to someone as a zip (every PNG plus a JSON manifest of the jobs).

Both run as commands (`imagine-bot retention`, `imagine-bot export`), on the sync engine.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from engine.domain.errors import NotFound
from engine.domain.types import FINAL_STATUSES
from engine.image_files import ImageStore
from engine.store import repo
from engine.store.db import Database
from engine.store.models import Generation, Team, User, utcnow

log = logging.getLogger(__name__)


@dataclass
class RetentionReport:
    applied: bool
    teams: dict[str, dict] = field(default_factory=dict)  # "platform:team" -> {days, jobs, files}

    def to_dict(self) -> dict:
        return asdict(self)


def apply_retention(
    db: Database, store: ImageStore, *, default_days: int, apply: bool = False, now: datetime | None = None
) -> RetentionReport:
    """Delete finished jobs older than each team's policy, rows first, then their files.

    Without `apply` nothing is deleted: the report says what would be. Queued and running jobs
    are never deleted, whatever their age.
    """
    now = now or utcnow()
    report = RetentionReport(applied=apply)
    with db.sync_session() as session:
        teams = session.scalars(select(Team).order_by(Team.id)).all()
        plans = []
        for team in teams:
            days = team.retention_days if team.retention_days is not None else default_days
            if days <= 0:
                continue
            old = (
                session.scalars(
                    select(Generation).where(
                        Generation.team_id == team.id,
                        Generation.created_at < now - timedelta(days=days),
                        Generation.status.in_([str(s) for s in FINAL_STATUSES]),
                    )
                )
                .unique()
                .all()
            )
            keys = [image.storage_key for job in old for image in job.images]
            keys += [job.grid_key for job in old if job.grid_key]
            keys += [job.params["source_key"] for job in old if (job.params or {}).get("source_key")]
            plans.append((team, days, [job.id for job in old], keys))
            report.teams[f"{team.platform}:{team.external_id}"] = {"days": days, "jobs": len(old), "files": len(keys)}
        if apply:
            for _, _, ids, _ in plans:
                if ids:
                    # Images, chat messages and lineage links go with them (ON DELETE in the schema).
                    session.execute(delete(Generation).where(Generation.id.in_(ids)))
    if apply:
        for team, days, ids, keys in plans:
            for key in keys:
                store.delete(key)
            if ids:
                log.info(
                    "retention: team %s/%s: deleted %d job(s) and %d file(s) older than %d days",
                    team.platform,
                    team.external_id,
                    len(ids),
                    len(keys),
                    days,
                )
    return report


def _job_manifest(job: Generation, files: dict[int, str]) -> dict:
    parent = job.parent_image
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt,
        "params": job.params,
        "seed": job.seed,
        "model": job.model_id,
        "requester": job.requester.display_name or job.requester.external_id,
        "parent": f"#{parent.generation_id}:{parent.index}" if parent else None,
        "thread_root": job.thread_root_id,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "render_info": job.render_info,
        "images": [
            {
                "index": image.index,
                "file": files.get(image.id),
                "width": image.width,
                "height": image.height,
                "seed": image.seed,
                "sha256": image.sha256,
            }
            for image in job.images
        ],
    }


def export_zip(
    db: Database, store: ImageStore, *, platform: str, team: str, user: str | None = None, thread: int | None = None
) -> bytes:
    """A zip of one user's history or one thread: images/<job>-<k>.png and manifest.json."""
    if (user is None) == (thread is None):
        raise ValueError("export a user's history or a thread, not both or neither")
    with db.sync_session() as session:
        team_row = session.scalar(select(Team).where(Team.platform == platform, Team.external_id == team))
        if team_row is None:
            raise NotFound(f"There is no {platform} team {team!r}.")
        if user is not None:
            user_row = session.scalar(select(User).where(User.team_id == team_row.id, User.external_id == user))
            if user_row is None:
                raise NotFound(f"User {user!r} has no jobs in this team.")
            jobs = (
                session.scalars(
                    select(Generation).where(Generation.requester_id == user_row.id).order_by(Generation.id)
                )
                .unique()
                .all()
            )
            subject: dict[str, str | int] = {"user": user}
        else:
            assert thread is not None  # checked above: exactly one of user and thread
            root = repo.get_generation(session, thread)
            if root is None or root.team_id != team_row.id:
                raise NotFound(f"There is no job #{thread} in this team.")
            jobs = list(repo.thread_members(session, root.thread_root_id or root.id))
            subject = {"thread": root.thread_root_id or root.id}
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
            files: dict[int, str] = {}
            for job in jobs:
                for image in job.images:
                    name = f"images/{job.id}-{image.index}.png"
                    try:
                        archive.writestr(name, store.get(image.storage_key))
                        files[image.id] = name
                    except FileNotFoundError:
                        log.warning("export: job %s image %s is missing on disk", job.id, image.index)
            manifest = {
                "exported_at": utcnow().isoformat(),
                "platform": platform,
                "team": team,
                **subject,
                "jobs": [_job_manifest(job, files) for job in jobs],
            }
            archive.writestr("manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False))
    return buffer.getvalue()
