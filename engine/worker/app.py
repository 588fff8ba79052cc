"""The Celery app: reliability settings for long GPU jobs, and one thin task.

Settings (see the Celery docs on long tasks):
- late ack + reject on worker lost: a job whose prefork child is SIGKILLed mid-render is
  redelivered at once, and the job row makes any redelivery render once (it returns early when
  the row is done or another worker holds a live lease on it). A whole worker process killed
  (the solo pool, production's shape) is recovered by the job lease instead: every worker's
  sweeper publishes jobs whose lease ran out again (engine/worker/recovery.py);
- prefetch 1: a worker holds only the job it renders, so others can take the rest;
- JSON only: only a job id crosses the queue;
- a `gpu` queue for renders; soft and hard time limits; Redis visibility timeout above the
  hard limit so Redis does not redeliver a job that is still rendering.

`imagine-bot worker` runs one worker process per GPU (solo pool: models are loaded after the
process starts, never before a fork, because torch in a forked child can hang).
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import TYPE_CHECKING, Any

from celery import Celery, Task

from engine.config import Settings, get_settings

if TYPE_CHECKING:  # the bots import this module for the task's name: no worker code at import
    from engine.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

RENDER_TASK = "imagine.render"
GPU_QUEUE = "gpu"


def celery_config(settings: Settings) -> dict[str, Any]:
    hard = settings.worker.time_limit_s
    transport: dict[str, Any] = {}
    if settings.broker_url.startswith(("redis://", "rediss://")):
        # Redis gives an unacked message back only after this: keep it above the longest render
        # so a job still rendering is not handed out twice. A worker that died is not waited
        # for: its job's lease runs out and the sweeper publishes it again (recovery.py).
        transport["visibility_timeout"] = hard * 2 + 60
        # A Redis that accepts connections but does not answer (paused, overloaded) must not
        # hold a publish longer than the publish timeout: the socket itself times out.
        transport["socket_timeout"] = settings.broker.publish_timeout_s
        transport["socket_connect_timeout"] = settings.broker.publish_timeout_s
    broker_url = settings.broker_url
    if broker_url.startswith(("sqla+", "sqlalchemy+")):
        from engine.worker import sqlite_broker

        broker_url = sqlite_broker.broker_url(broker_url)  # polls every 20 ms, not every second
    return {
        "broker_url": broker_url,
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": settings.broker.publish_timeout_s,
        "broker_heartbeat": settings.broker.heartbeat_s,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,  # results live in SQL
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": settings.worker.soft_time_limit_s,
        "task_time_limit": hard,
        "task_routes": {RENDER_TASK: {"queue": GPU_QUEUE}},
        "task_default_queue": "default",
        "task_publish_retry": True,
        # One quick retry (a connection the broker dropped is reopened); the service gives up
        # after the publish timeout in any case.
        "task_publish_retry_policy": {
            "max_retries": 1,
            "interval_start": 0.1,
            "interval_step": 0.5,
            "interval_max": 1.0,
        },
        "worker_send_task_events": False,
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }


class RenderTask(Task):
    """Holds the worker process's runtime (database, storage, wake-ups, model), built lazily:
    after the fork, once per process, and kept warm between jobs."""

    acks_late = True
    reject_on_worker_lost = True

    @cached_property
    def runtime(self) -> WorkerRuntime:
        from engine.worker.runtime import build_runtime

        return build_runtime(self.app.imagine_settings)


def render_generation(self: RenderTask, generation_id: int) -> str:
    """Render one job by id (everything else is read from its row)."""
    from engine.worker.jobs import run_generation

    return run_generation(self.runtime, int(generation_id))


def build_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    if settings.broker_is_embedded:
        settings.data_dir.mkdir(parents=True, exist_ok=True)  # the broker's SQLite file lives there
    app = Celery("imagine", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.imagine_settings = settings
    app.task(name=RENDER_TASK, base=RenderTask, bind=True)(render_generation)
    return app


app: Celery  # declared only: built by __getattr__ below on first access


def __getattr__(name: str) -> Celery:
    # `celery -A engine.worker.app worker` looks up `app`: build it on first access, not at import.
    if name == "app":
        global app
        app = build_app()
        return app
    raise AttributeError(name)
