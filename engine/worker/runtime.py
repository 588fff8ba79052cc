"""Build what a worker process needs from settings (database, storage, wake-ups, renderer)."""

from __future__ import annotations

from engine.config import Settings
from engine.image_files import ImageStore
from engine.notify import make_publisher
from engine.store.db import Database
from engine.worker.jobs import Renderer, WorkerRuntime


def build_runtime(settings: Settings) -> WorkerRuntime:
    def load() -> Renderer:
        # Heavy: imports torch and loads the model. Runs once per worker process, on first use.
        from engine.render.factory import load_renderer

        render = settings.render
        return load_renderer(
            render.model,
            settings.data_dir,
            backend=render.backend,
            device=render.device,
            dtype=render.dtype,
            cpu_offload=render.cpu_offload,
            compile=render.compile,
            torch_threads=render.torch_threads,
            prior_model=render.prior_model or None,
            inpaint_model=render.inpaint_model or None,
            noop_delay_ms=render.noop_delay_ms,
        )

    return WorkerRuntime(
        db=Database(settings.database_url, pool_size=2, max_overflow=2),
        store=ImageStore(settings.images_dir),
        publisher=make_publisher(settings.notify_url),
        renderer_factory=load,
        max_batch_images=settings.render.max_batch_images,
        batch_wait_s=settings.render.batch_wait_ms / 1000,
        heartbeat_s=settings.worker.heartbeat_s,
        lease_s=settings.worker.lease_s,
        max_attempts=settings.worker.max_attempts,
    )
