"""What a worker process holds for its lifetime, and how it is built from settings.

`WorkerRuntime` is the one object every step of a job reads (database, image storage, wake-ups,
the renderer, batching and lease settings); `build_runtime` makes it from `Settings` in the
worker process, after the fork. The renderer is only described here (`Renderer`), and loaded on
first use, so importing this module imports no model library.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from engine.config import Settings
from engine.image_files import ImageStore
from engine.notify import Publisher, make_publisher
from engine.render.types import ProgressFn, RenderJob, RenderResult
from engine.store.db import Database
from engine.worker.lease import Heartbeat

if TYPE_CHECKING:
    from engine.render.speedups import Speedups

log = logging.getLogger(__name__)

#: A job whose worker died this many times (OOM kill, hard time limit) is failed, not retried.
MAX_ATTEMPTS = 3


class Renderer(Protocol):
    model_id: str

    def render_batch(self, jobs: list[RenderJob], progress_fns: list[ProgressFn]) -> list[RenderResult | None]:
        """One pipeline call for compatible jobs; None for a job dropped (cancelled) on the way."""


@dataclass
class WorkerRuntime:
    """What a worker process holds for its lifetime (the renderer is loaded once, lazily)."""

    db: Database
    store: ImageStore
    publisher: Publisher
    renderer_factory: Any  # () -> Renderer
    max_batch_images: int = 8
    batch_wait_s: float = 0.0
    heartbeat_s: float = 5.0
    lease_s: float = 20.0
    max_attempts: int = MAX_ATTEMPTS
    # Evaluated per runtime, i.e. in the worker process that renders (not at import).
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    _renderer: Renderer | None = None
    _heartbeat: Heartbeat | None = None

    @property
    def heartbeat(self) -> Heartbeat:
        if self._heartbeat is None:
            self._heartbeat = Heartbeat(self.db, self.name, self.heartbeat_s)
        return self._heartbeat

    @property
    def renderer(self) -> Renderer:
        if self._renderer is None:
            self._renderer = self.renderer_factory()
        return self._renderer


def speedups_from(settings: Settings) -> Speedups:
    """The render speed-ups the settings ask for (IMAGINE_RENDER_COMPILE, _CUDA_GRAPHS, ...)."""
    from engine.render.speedups import Speedups

    render = settings.render
    return Speedups(
        compile=render.compile,
        cuda_graphs=render.cuda_graphs,
        channels_last=render.channels_last,
        fuse_qkv=render.fuse_qkv,
        cache_dir=settings.compile_cache_dir,
    )


def build_runtime(settings: Settings) -> WorkerRuntime:
    def load() -> Renderer:
        # Heavy: imports torch and loads the model. Runs once per worker process, on first use.
        from engine.render.factory import load_renderer

        render = settings.render
        speedups = speedups_from(settings)
        renderer = load_renderer(
            render.model,
            settings.data_dir,
            backend=render.backend,
            device=render.device,
            dtype=render.dtype,
            cpu_offload=render.cpu_offload,
            speedups=speedups,
            torch_threads=render.torch_threads,
            prior_model=render.prior_model or None,
            inpaint_model=render.inpaint_model or None,
            noop_delay_ms=render.noop_delay_ms,
        )
        warm_up = getattr(renderer, "warm_up", None)  # the no-op renderer has nothing to compile
        if speedups.any and warm_up is not None:
            # Compile now, in the solo pool before the worker says it is ready, rather than in
            # the first user's job (minutes cold; seconds from the compile cache).
            log.info("speed-ups warmed up in %.1f s", warm_up(render.max_batch_images))
        return renderer

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
