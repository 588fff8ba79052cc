"""A Celery worker inside another process (the console, the demo, tests): solo pool, in a
thread. It is a real worker on the real broker — routing, acks and prefetch included — just
without a process of its own."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from celery import Celery
from celery.worker import WorkController
from celery.worker.consumer import Consumer

from engine.worker.app import GPU_QUEUE

if TYPE_CHECKING:
    from engine.worker.recovery import Sweeper

log = logging.getLogger(__name__)


class _ReadyWorkController(WorkController):
    """A WorkController that says when its consumer is ready to take jobs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: Consumer) -> None:
        super().on_consumer_ready(consumer)
        self.ready.set()


class EmbeddedWorker:
    def __init__(
        self, app: Celery, *, queues: tuple[str, ...] = (GPU_QUEUE, "default"), pool: str = "solo", concurrency: int = 1
    ) -> None:
        self.app = app
        self.queues = queues
        self.pool = pool
        self.concurrency = concurrency
        self._controller: _ReadyWorkController | None = None
        self._thread: threading.Thread | None = None
        self._sweeper: Sweeper | None = None

    def start(self, timeout: float = 30.0) -> None:
        # The solo pool looks tasks up on the *current* app: make it this one.
        self.app.set_current()
        self.app.set_default()
        self._controller = _ReadyWorkController(
            app=self.app,
            pool=self.pool,
            concurrency=self.concurrency,
            queues=list(self.queues),
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel="WARNING",
            hostname=f"embedded@{threading.get_ident()}",
        )
        self._thread = threading.Thread(target=self._controller.start, name="imagine-worker", daemon=True)
        self._thread.start()
        if not self._controller.ready.wait(timeout):
            raise RuntimeError(f"the embedded worker did not connect to the broker within {timeout:.0f} s")
        log.info("embedded worker ready on queues %s", ", ".join(self.queues))
        settings = getattr(self.app, "imagine_settings", None)
        if settings is not None:
            from engine.worker.recovery import start_sweeper

            self._sweeper = start_sweeper(self.app, settings)

    def stop(self, timeout: float = 15.0) -> None:
        if self._controller is None:
            return
        from celery.worker import state

        if self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper = None
        # Ask the consumer loop to stop from inside its own thread (as Celery's test worker
        # does): calling WorkController.stop() from another thread blocks on the connection.
        state.should_terminate = 0
        try:
            if self._thread:
                self._thread.join(timeout)
                if self._thread.is_alive():
                    log.warning("the embedded worker did not stop within %.0f s", timeout)
        finally:
            state.should_terminate = None
            self._controller = None

    def __enter__(self) -> EmbeddedWorker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
