"""Use cases: everything imagine-bot's chat front-ends ask of the core, platform-neutral.

One object per kind of caller, each built once by the composition root (bot/runtime.py):
- `ImagineService`: what users and moderators ask (submit, cancel, history, threads, quota,
  moderation). Adapters translate a platform payload into an `Actor` plus a request, call one
  method and render what comes back; every rule (quota, bans, blocked terms, threads,
  permissions) lives there and in engine.domain, never in an adapter.
- `TeamGallery`: the gallery's reads, by team id (its signed link is the permission).
- `Deliveries`: the delivery side's bookkeeping: messages posted for jobs, delivery claims.
- `ProcessedEvents`: platform event ids already handled (Slack retries).

Nothing in this package imports a platform, Celery or torch module: the queue is handed in as a
`JobQueue`.
"""

from engine.service._base import JobQueue, ServicePolicy, new_task_id
from engine.service._deliveries import Deliveries
from engine.service._events import ProcessedEvents
from engine.service._gallery import TeamGallery
from engine.service._jobs import Jobs
from engine.service._moderation import Moderation
from engine.service._submit import Submitting
from engine.service._threads import build_thread_tree


class ImagineService(Submitting, Jobs, Moderation):
    """The one entry point adapters use for what users and moderators ask (each mixin is one
    concern: submitting jobs, acting on and reading jobs, moderation)."""


__all__ = [
    "Deliveries",
    "ImagineService",
    "JobQueue",
    "ProcessedEvents",
    "ServicePolicy",
    "TeamGallery",
    "build_thread_tree",
    "new_task_id",
]
