"""The service's JobQueue on Celery: publish a job id to the `gpu` queue by task name, so the
bot never imports the task code (or torch)."""

from __future__ import annotations

import logging

from celery import Celery

from engine.worker.app import GPU_QUEUE, RENDER_TASK

log = logging.getLogger(__name__)


class CeleryJobQueue:
    def __init__(self, app: Celery) -> None:
        self.app = app

    def enqueue(self, generation_id: int, task_id: str) -> None:
        self.app.send_task(RENDER_TASK, args=[generation_id], task_id=task_id, queue=GPU_QUEUE)

    def waiting(self) -> int | None:
        """Messages waiting in the render queue (not those a worker holds); None when the
        broker cannot be asked."""
        try:
            with self.app.connection_for_read() as connection:
                channel = connection.default_channel
                try:
                    return channel.queue_declare(GPU_QUEUE, passive=True).message_count
                except connection.channel_errors:
                    return 0  # no such queue yet (Redis drops an empty list): nothing waits
        except Exception as error:  # noqa: BLE001 - unknown is not empty
            log.info("render queue length unknown: %s", error)
            return None
