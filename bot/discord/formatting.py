"""How imagine-bot looks in Discord: escaped text within Discord's limits, and image files.

Every message goes out with `NO_PINGS` (the client's default too), and user text is escaped on
top of that, so a prompt of `@everyone <@&123>` is shown as typed and pings nobody.
"""

from __future__ import annotations

import asyncio
import io
import logging

import discord

from bot import replies
from engine.domain.types import GenerationStatus
from engine.domain.views import GenerationView
from engine.image_files import ImageStore
from engine.images import fit_within

log = logging.getLogger(__name__)

NO_PINGS = discord.AllowedMentions.none()
MESSAGE_LIMIT = 2000  # characters of message content
THREAD_NAME_LIMIT = 100
CHOICE_LIMIT = 100  # characters of an autocomplete choice's name and value
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # bytes per file where the channel's own limit is unknown
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def escape(text: str) -> str:
    """Show user text as typed: no markdown, and mentions broken so they cannot ping."""
    return discord.utils.escape_markdown(discord.utils.escape_mentions(text))


def fit(text: str, limit: int = MESSAGE_LIMIT) -> str:
    return replies.shorten(text, limit)


def message_link(guild_id: str | int | None, channel_id: str | int, message_id: str | int) -> str:
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


def result_text(job: GenerationView, parent_link: str | None = None) -> str:
    """The text posted with a finished job's image(s), or why there are none."""
    if job.status != GenerationStatus.DONE:
        return fit(replies.job_status(job, escape=escape))
    lines = [replies.result_caption(job, escape)]
    if parent_link:
        lines.append(f"from {job.parent_label}: {parent_link}")
    if len(job.images) > 1:
        lines.append("React 1️⃣–4️⃣ for variations of one image · ✉️ to get it in your DMs")
    else:
        lines.append("React 🔁 for variations · ✉️ to get it in your DMs")
    return fit("\n".join(lines))


def details_text(job: GenerationView) -> str:
    """What ✉️ sends: the caption plus every parameter needed to render it again."""
    shown = {k: v for k, v in job.params.items() if k not in ("sources", "source_key")}
    params = ", ".join(f"{k}={v}" for k, v in sorted(shown.items()))
    lines = [replies.result_caption(job, escape), f"prompt: {escape(job.prompt)}"]
    if params:
        lines.append(f"parameters: {escape(params)}")
    seeds = ", ".join(f"{image.index}: {image.seed}" for image in job.images)
    if seeds:
        lines.append(f"image seeds: {seeds}")
    return fit("\n".join(lines))


def thread_name(job: GenerationView) -> str:
    # Thread names are plain text (no markdown, no mentions): no escaping needed, only the limit.
    return replies.shorten(f"#{job.id} {job.prompt or job.kind}", THREAD_NAME_LIMIT)


async def job_file(store: ImageStore, job: GenerationView, upload_limit: int | None) -> discord.File | None:
    """The job's grid (or its one image), re-encoded smaller if the channel's limit needs it."""
    key = job.grid_key or (job.images[0].storage_key if job.images else None)
    if key is None:
        return None
    limit = upload_limit or DEFAULT_UPLOAD_LIMIT

    def read() -> bytes | None:
        data = store.get(key)
        try:
            return fit_within(data, limit)
        except ValueError:
            log.warning("job %s: %s cannot fit %d bytes; sent without it", job.id, key, limit)
            return None

    data = await asyncio.to_thread(read)
    if data is None:
        return None
    suffix = "png" if data.startswith(PNG_MAGIC) else "jpg"
    return discord.File(io.BytesIO(data), filename=f"imagine-{job.id}.{suffix}")
