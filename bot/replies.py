"""Platform-neutral replies: what to say about jobs, history, threads and quotas.

Every function takes an `escape` for user text (Discord markdown, Slack mrkdwn, nothing for the
console) so a prompt is shown as text and never pings anyone or breaks the formatting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from engine.domain.quota import describe_duration
from engine.domain.types import GenerationKind, GenerationStatus
from engine.domain.views import (
    AuditEntry,
    GenerationView,
    HistoryPage,
    QuotaStatus,
    TeamStats,
    ThreadNode,
)

Escape = Callable[[str], str]


def no_escape(text: str) -> str:
    return text


@dataclass(frozen=True)
class Reply:
    """What a command answers. `job` is set when a job was queued (or acted on)."""

    text: str
    job: GenerationView | None = None
    queue_position: int | None = None
    ephemeral: bool = False
    is_error: bool = False


#: What a user is told when something unexpected failed on imagine-bot's side (it is logged). The
#: one copy: the runner, Slack's listeners and Discord's handlers all say this.
APOLOGY = "Sorry, something went wrong on imagine-bot's side; it has been logged."


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def progress_bar(fraction: float, width: int = 20) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


def job_title(job: GenerationView, escape: Escape = no_escape, limit: int = 120) -> str:
    """`#12 imagine "a red star"` / `#13 variation of #12:3`."""
    if job.kind == GenerationKind.BLEND:
        return f"#{job.id} {escape(job.prompt)}"
    edit = job.params.get("edit")
    if edit and job.parent_label:
        what = {
            "region": "edit",
            "zoomout": f"zoom-out ×{edit.get('factor', 2):g}",
            "pan": f"pan {edit.get('direction', '')}",
        }.get(edit.get("op"), "edit")
        title = f"#{job.id} {what} of {job.parent_label}"
        if edit.get("op") == "region":
            title += f' "{escape(shorten(job.prompt, limit))}"'
        return title
    if "edit_toward" in job.params and job.parent_label:
        return f'#{job.id} {job.parent_label} toward "{escape(shorten(job.params["edit_toward"], limit))}"'
    if job.kind in (GenerationKind.VARIATION, GenerationKind.UPSCALE) or (
        job.kind == GenerationKind.REROLL and job.parent_label
    ):
        what = f"{job.kind} of {job.parent_label}" if job.parent_label else str(job.kind)
        return f"#{job.id} {what}"
    return f'#{job.id} {job.kind} "{escape(shorten(job.prompt, limit))}"'


def job_status(job: GenerationView, position: int | None = None, escape: Escape = no_escape) -> str:
    """One line for a job's status message while it is queued or running."""
    title = job_title(job, escape)
    if job.status == GenerationStatus.QUEUED:
        where = f", position {position} in the queue" if position else ""
        return f"{title}: queued{where}."
    if job.status == GenerationStatus.RUNNING:
        stage = f" ({job.stage})" if job.stage and job.stage != "starting" else ""
        return f"{title}: rendering {progress_bar(job.progress)} {round(job.progress * 100)}%{stage}"
    return f"{title}: {job_outcome(job)}"


def job_outcome(job: GenerationView) -> str:
    if job.status == GenerationStatus.DONE:
        count = len(job.images)
        return f"done, {count} image{'s' if count != 1 else ''}, seed {job.seed}."
    if job.status == GenerationStatus.CANCELLED:
        return f"{job.error or 'cancelled'}; your quota was refunded."
    if job.status == GenerationStatus.FAILED:
        return f"failed: {job.error or 'unknown error'}; your quota was refunded."
    return str(job.status)


def result_caption(job: GenerationView, escape: Escape = no_escape) -> str:
    """The text posted with a finished grid."""
    lines = [job_title(job, escape)]
    if job.negative_prompt:
        lines.append(f"without: {escape(shorten(job.negative_prompt, 200))}")
    lines.append(
        f"seed {job.seed} · model {escape(job.model_id)} · by {escape(job.requester_name or job.requester_external_id)}"
    )
    return "\n".join(lines)


def history_text(page: HistoryPage, escape: Escape = no_escape) -> str:
    if not page.items:
        return "No jobs yet: start with `/imagine <prompt>`."
    lines = [f"Your jobs (page {page.page} of {page.pages}, {page.total} in all):"]
    for job in page.items:
        when = job.created_at.strftime("%Y-%m-%d %H:%M")
        lines.append(f"{when}  {job_title(job, escape, 80)}  [{job.status}]")
    if page.page < page.pages:
        lines.append(f"Next: `/history {page.page + 1}`")
    return "\n".join(lines)


def thread_text(tree: ThreadNode, escape: Escape = no_escape) -> str:
    """The lineage as an indented tree, each job with its images and status."""
    lines = []
    for depth, node in tree.walk():
        job = node.generation
        prefix = "" if depth == 0 else "   " * (depth - 1) + "└─ "
        status = "" if job.status == GenerationStatus.DONE else f" [{job.status}]"
        images = f" ({len(job.images)} images)" if job.images else ""
        lines.append(f"{prefix}{job_title(job, escape, 80)}{images}{status}")
    return "\n".join(lines)


def quota_text(status: QuotaStatus, now: datetime) -> str:
    resets = describe_duration(status.resets_at - now)
    if status.limit is None:
        return f"Unlimited images today ({status.source}); {status.used} used so far."
    total = status.limit + status.granted
    extra = f" + {status.granted} granted" if status.granted else ""
    return (
        f"{status.remaining} of {total} images left today ({status.limit}/day from "
        f"{status.source}{extra}); {status.used} used. Resets in {resets} (00:00 UTC)."
    )


def audit_text(entries: list[AuditEntry], escape: Escape = no_escape) -> str:
    if not entries:
        return "No moderator actions yet."
    lines = ["Recent moderator actions:"]
    for entry in entries:
        details = ", ".join(f"{k}={v}" for k, v in entry.details.items() if v is not None)
        lines.append(
            f"{entry.created_at:%Y-%m-%d %H:%M} {escape(entry.actor)}: {entry.action} "
            f"{escape(entry.target)}" + (f" ({escape(details)})" if details else "")
        )
    return "\n".join(lines)


def stats_text(stats: TeamStats, escape: Escape = no_escape) -> str:
    statuses = ", ".join(f"{count} {status}" for status, count in sorted(stats.by_status.items()))
    lines = [
        f"Last {stats.days} days: {stats.jobs} jobs, {stats.images} images charged"
        + (f" ({statuses})" if statuses else "")
        + "."
    ]
    if stats.failures:
        lines.append("Failures: " + "; ".join(f"{escape(reason)} ×{n}" for reason, n in stats.failures))
    if stats.by_user:
        lines.append(
            "By user: " + ", ".join(f"{escape(row.who)} {row.images} images/{row.jobs} jobs" for row in stats.by_user)
        )
    if stats.by_role:
        lines.append(
            "By role: " + ", ".join(f"{escape(row.who)} {row.images} images/{row.jobs} jobs" for row in stats.by_role)
        )
    return "\n".join(lines)
