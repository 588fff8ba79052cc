"""The service's JobQueue on Celery: publish a job id to the `gpu` queue by task name, so the
bot never imports the task code (or torch)."""

from __future__ import annotations

from celery import Celery

from engine.worker.app import GPU_QUEUE, RENDER_TASK


class CeleryJobQueue:
    def __init__(self, app: Celery) -> None:
        self.app = app

    def enqueue(self, generation_id: int, task_id: str) -> None:
        self.app.send_task(RENDER_TASK, args=[generation_id], task_id=task_id, queue=GPU_QUEUE)
