"""Composition root for the bot side: settings → database, service objects, queue, wake-ups.

Nothing here imports torch: the bot only publishes job ids (by task name) and reads rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from celery import Celery

from engine.config import Settings
from engine.image_files import ImageStore
from engine.notify import Wakeups, make_wakeups
from engine.service import (
    Deliveries,
    ImagineService,
    JobQueue,
    ProcessedEvents,
    ServicePolicy,
    TeamGallery,
)
from engine.store.db import Database

if TYPE_CHECKING:
    from bot.gallery.links import GalleryLinks
    from engine.ops import OpsServer
    from engine.worker.embedded import EmbeddedWorker

log = logging.getLogger(__name__)


@dataclass
class BotRuntime:
    settings: Settings
    db: Database
    #: What users and moderators ask (commands, buttons, reactions).
    service: ImagineService
    #: Messages posted for jobs and delivery claims (the delivery loop and the adapters).
    deliveries: Deliveries
    #: The gallery's reads by team id.
    gallery: TeamGallery
    #: Platform event ids already handled (Slack's retries).
    events: ProcessedEvents
    store: ImageStore
    celery_app: Celery

    def start_ops(self) -> OpsServer | None:
        """Serve /metrics, /healthz, /readyz for this bot process (None if the port is 0)."""
        from engine.ops import OpsServer, broker_check, database_check, queue_depth_hook

        if not self.settings.ops.port:
            return None
        return OpsServer(
            self.settings.ops.host,
            self.settings.ops.port,
            checks={"database": database_check(self.db), "broker": broker_check(self.celery_app)},
            before_scrape=[queue_depth_hook(self.db)],
        ).start()

    def start_embedded_worker(self) -> EmbeddedWorker | None:
        """With the embedded broker, run a render worker in this process, so one command is a
        whole working bot; None otherwise (workers run on their own, one per GPU)."""
        if not self.settings.embedded_worker:
            return None
        from engine.worker.embedded import EmbeddedWorker

        worker = EmbeddedWorker(self.celery_app)
        worker.start()
        return worker

    def gallery_links(self) -> GalleryLinks | None:
        """Signed-link maker for `/imagine gallery`, or None if no gallery secret is set."""
        from bot.gallery.links import GalleryLinks

        gallery = self.settings.gallery
        if not gallery.secret:
            return None
        return GalleryLinks(gallery.secret, gallery.base_url, gallery.link_ttl_hours * 3600)

    def wakeups(self) -> Wakeups:
        return make_wakeups(self.settings.notify_url, self.settings.broker.poll_interval_s)

    async def close(self) -> None:
        await self.db.dispose()


def service_policy(settings: Settings) -> ServicePolicy:
    return ServicePolicy(
        default_model=settings.render.model,
        default_daily_images=settings.quota.default_daily_images,
        max_prompt_chars=settings.limits.max_prompt_chars,
        max_steps=settings.limits.max_steps,
        max_guidance=settings.limits.max_guidance,
        history_page_size=settings.limits.history_page_size,
        enqueue_timeout_s=settings.broker.publish_timeout_s,
    )


def build_bot_runtime(settings: Settings, *, queue: JobQueue | None = None) -> BotRuntime:
    from engine.worker.app import build_app
    from engine.worker.queue import CeleryJobQueue

    if settings.auto_migrate:
        from engine.store.migrate import upgrade

        upgrade(settings.database_url)
    db = Database(
        settings.database_url,
        pool_size=settings.database.pool_size,
        max_overflow=settings.database.max_overflow,
        echo=settings.database.echo,
    )
    app = build_app(settings)
    store = ImageStore(settings.images_dir)
    service = ImagineService(db, queue or CeleryJobQueue(app), service_policy(settings), store=store)
    return BotRuntime(
        settings=settings,
        db=db,
        service=service,
        deliveries=Deliveries(db),
        gallery=TeamGallery(db),
        events=ProcessedEvents(db),
        store=store,
        celery_app=app,
    )
