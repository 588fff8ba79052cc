"""Retention deletes what each team's policy says is old; export zips history and threads."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from engine.domain.errors import NotFound, NotPermitted, UsageError
from engine.domain.types import Actor, ImageRef, ImagineRequest, Platform, RenderParams, VariationRequest
from engine.image_files import ImageStore
from engine.retention import apply_retention, export_zip
from engine.store.db import Database
from engine.store.models import Generation, Image, utcnow

ALICE = Actor(Platform.CONSOLE, "team-1", "alice", "Alice")
ADMIN = Actor(Platform.CONSOLE, "team-1", "root", is_platform_admin=True)
OTHER_TEAM = Actor(Platform.CONSOLE, "team-2", "bob", "Bob")


async def make_job(service, database, store, actor=ALICE, age_days=0, parent=None, status="done"):
    if parent is None:
        job = (await service.submit_imagine(actor, ImagineRequest("a red star", params=RenderParams(n=2)))).generation
    else:
        job = (await service.submit_variation(actor, VariationRequest(parent, params=RenderParams(n=2)))).generation

    def finish(session):
        row = session.get(Generation, job.id)
        row.status = status
        row.created_at = utcnow() - timedelta(days=age_days)
        row.grid_key = store.put(ImageStore.key_for(job.id, "grid.png"), b"grid")
        if status == "done":
            for index in (1, 2):
                key = store.put(ImageStore.key_for(job.id, f"{index}.png"), f"png {job.id}-{index}".encode())
                session.add(
                    Image(
                        generation_id=job.id,
                        index=index,
                        storage_key=key,
                        width=8,
                        height=8,
                        seed=index,
                        sha256="0" * 64,
                        embedding=b"\0" * 8,
                        embedding_dim=2,
                    )
                )

    await database.run(finish)
    return job


@pytest.fixture
def store(tmp_path):
    return ImageStore(tmp_path / "images")


async def count(database, model):
    return await database.run(lambda s: s.scalar(select(func.count()).select_from(model)))


async def test_retention_deletes_old_jobs_rows_and_files(service, database, database_url, store):
    """Finished jobs older than the policy go, with their images; newer and running ones stay."""
    old = await make_job(service, database, store, age_days=40)
    running_old = await make_job(service, database, store, age_days=40, status="running")
    recent = await make_job(service, database, store, age_days=1)
    sync_db = Database(database_url)
    dry = apply_retention(sync_db, store, default_days=30)
    assert dry.teams == {"console:team-1": {"days": 30, "jobs": 1, "files": 3}} and not dry.applied
    assert await count(database, Generation) == 3  # a dry run deletes nothing
    apply_retention(sync_db, store, default_days=30, apply=True)
    remaining = await database.run(lambda s: sorted(s.scalars(select(Generation.id))))
    assert remaining == [running_old.id, recent.id]
    assert not store.path(ImageStore.key_for(old.id, "1.png")).exists()
    assert store.path(ImageStore.key_for(recent.id, "1.png")).exists()
    assert await count(database, Image) == 2
    sync_db.sync_engine.dispose()


async def test_team_policy_overrides_the_default(service, database, database_url, store):
    """A team's own policy wins: 'forever' keeps everything, a shorter one deletes sooner."""
    await make_job(service, database, store, age_days=10)
    await make_job(service, database, store, OTHER_TEAM, age_days=10)
    await service.set_retention(ADMIN, 0)  # team-1 keeps everything
    await service.set_retention(Actor(Platform.CONSOLE, "team-2", "boss", is_platform_admin=True), 5)
    sync_db = Database(database_url)
    report = apply_retention(sync_db, store, default_days=365, apply=True)
    assert report.teams == {"console:team-2": {"days": 5, "jobs": 1, "files": 3}}
    assert await count(database, Generation) == 1
    sync_db.sync_engine.dispose()


async def test_retention_policy_is_for_moderators(service):
    """Only moderators set retention, within 0-3650 days, and it is audited."""
    with pytest.raises(NotPermitted):
        await service.set_retention(ALICE, 30)
    with pytest.raises(UsageError, match="0 \\(keep everything\\) to 3650 days"):
        await service.set_retention(ADMIN, 5000)
    await service.set_retention(ADMIN, 30)
    assert (await service.audit_log(ADMIN))[0].action == "retention.set"


async def test_export_history_and_thread(service, database, database_url, store):
    """A user's history and a thread export as PNGs plus a manifest that names every file."""
    root = await make_job(service, database, store)
    child = await make_job(service, database, store, parent=ImageRef(root.id, 2))
    await make_job(service, database, store)  # another root: in the history, not the thread
    sync_db = Database(database_url)
    history = zipfile.ZipFile(io.BytesIO(export_zip(sync_db, store, platform="console", team="team-1", user="alice")))
    manifest = json.loads(history.read("manifest.json"))
    assert [job["id"] for job in manifest["jobs"]] == [root.id, child.id, root.id + 2]
    assert len([n for n in history.namelist() if n.endswith(".png")]) == 6
    assert history.read(manifest["jobs"][0]["images"][0]["file"]) == f"png {root.id}-1".encode()
    thread = zipfile.ZipFile(io.BytesIO(export_zip(sync_db, store, platform="console", team="team-1", thread=child.id)))
    thread_manifest = json.loads(thread.read("manifest.json"))
    assert thread_manifest["thread"] == root.id
    assert [(j["id"], j["parent"]) for j in thread_manifest["jobs"]] == [(root.id, None), (child.id, f"#{root.id}:2")]
    with pytest.raises(NotFound, match="User 'nobody' has no jobs"):
        export_zip(sync_db, store, platform="console", team="team-1", user="nobody")
    with pytest.raises(NotFound, match="There is no console team 'team-9'"):
        export_zip(sync_db, store, platform="console", team="team-9", thread=root.id)
    await make_job(service, database, store, OTHER_TEAM)
    with pytest.raises(NotFound, match=f"There is no job #{root.id} in this team"):
        export_zip(sync_db, store, platform="console", team="team-2", thread=root.id)
    sync_db.sync_engine.dispose()
