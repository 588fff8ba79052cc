"""Variation threads: each lineage (a root image and everything varied from it) gets one thread.

The first variation of a root opens a Discord thread on the root's result message; the thread
id is recorded on the root job (role `MessageRole.THREAD`, channel = the thread's parent)
so every replica, and this one after a restart, posts the lineage's later jobs into it. Which
jobs belong to a lineage is the service's rule (`thread_root_id`); this module only maps a
lineage to a Discord channel.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

import discord

from bot.discord.formatting import thread_name
from engine.domain.types import MessageRole, Platform
from engine.domain.views import GenerationView
from engine.service import Deliveries

log = logging.getLogger(__name__)

THREAD_ALREADY_EXISTS = 160004
ARCHIVE_AFTER_MINUTES: Final = 1440


async def result_message(deliveries: Deliveries, job_id: int, image_index: int | None = None) -> tuple[int, int] | None:
    """(channel, message) where a finished job is shown: the message of that one image if there
    is one, else its grid (a new result message, or the status message edited into it)."""
    shown = [m for m in await deliveries.messages_for(job_id) if m.role in (MessageRole.RESULT, MessageRole.PROGRESS)]
    for wanted in ((image_index, MessageRole.RESULT), (None, MessageRole.RESULT), (None, MessageRole.PROGRESS)):
        found = next((m for m in shown if (m.image_index, m.role) == wanted), None)
        if found is not None:
            return int(found.channel_id), int(found.message_id)
    return None


class VariationThreads:
    def __init__(self, client: discord.Client, deliveries: Deliveries) -> None:
        self.client = client
        self.deliveries = deliveries
        self._known: dict[int, int] = {}  # root job id → channel id its lineage is posted in
        self._locks: dict[int, asyncio.Lock] = {}

    async def channel_for(self, job: GenerationView) -> int | None:
        """The channel (a thread) for a lineage job, opening it if needed; None for a root job
        or where no thread can be opened (the caller then posts in the job's own channel)."""
        root = job.thread_root_id
        if root is None:
            return None
        if root in self._known:
            return self._known[root]
        lock = self._locks.setdefault(root, asyncio.Lock())
        async with lock:
            if root not in self._known:
                channel = await self._find_or_open(root, job)
                if channel is None:
                    return None
                self._known[root] = channel
        return self._known[root]

    async def _find_or_open(self, root: int, job: GenerationView) -> int | None:
        for message in await self.deliveries.messages_for(root):
            if message.role == MessageRole.THREAD:
                return int(message.message_id)
        result = await result_message(self.deliveries, root)
        if result is None:
            log.info("job %s: lineage root %s has no Discord message to start a thread on", job.id, root)
            return None
        channel_id, message_id = result
        guild_id = int(job.team_external_id) if job.team_external_id.isdigit() else None
        root_message = self.client.get_partial_messageable(channel_id, guild_id=guild_id).get_partial_message(
            message_id
        )
        try:
            root_view = await self.deliveries.generation(root)
            thread = await root_message.create_thread(
                name=thread_name(root_view), auto_archive_duration=ARCHIVE_AFTER_MINUTES
            )
            thread_id = thread.id
        except discord.HTTPException as error:
            if error.code != THREAD_ALREADY_EXISTS:
                # Deleted root message, a root inside a thread, missing permission: post the
                # lineage in the channel instead (once per process, not once per job).
                log.warning(
                    "job %s: cannot open a thread on message %s (%s); posting in channel %s",
                    job.id,
                    message_id,
                    error,
                    channel_id,
                )
                return channel_id
            # Another replica (or an earlier try of ours) opened it: a thread started from a
            # message has that message's id.
            thread_id = message_id
        except ValueError:  # the guild is not in the cache yet: no thread can be made from here
            return channel_id
        await self.deliveries.record_message(
            Platform.DISCORD, str(channel_id), str(thread_id), root, role=MessageRole.THREAD
        )
        log.info("job %s: variation thread %s opened on root %s", job.id, thread_id, root)
        return thread_id
