"""Posting in Slack for the other roles: status messages, the grid upload (files_upload_v2),
the thread a job's messages go into, deletions and edits that tolerate "already gone", and the
slots that bound the work in progress. Part of `SlackAdapter` (bot/slack/adapter.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from bot import commands as c
from bot.replies import Reply, shorten
from bot.slack.blocks import escape, outcome_message, progress_message
from bot.slack.web import api_error
from engine.domain.errors import StoreUnavailable
from engine.domain.types import Actor, GenerationStatus, MessageRole, Platform
from engine.domain.views import GenerationView
from engine.images import fit_within

if TYPE_CHECKING:
    import aiohttp
    from slack_bolt.context.respond.async_respond import AsyncRespond
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.delivery import Delivery
    from bot.runner import CommandRunner
    from bot.slack.config import SlackSettings
    from bot.slack.identity import SlackDirectory
    from engine.image_files import ImageStore
    from engine.service import Deliveries, ImagineService, ProcessedEvents

# Slack API errors that no retry fixes: the bot cannot post in that channel.
UNREACHABLE = {"channel_not_found", "not_in_channel", "is_archived"}

log = logging.getLogger("bot.slack.adapter")

# Slack API errors that mean "already gone": deleting twice is not a failure.
GONE = {"message_not_found", "file_not_found", "file_deleted", "cant_delete_message"}
SHARE_LOOKUP_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0)


class Messages:
    """Posting, uploading, deleting and editing messages, for the adapter's other roles."""

    # Set by SlackAdapter.__init__ (bot/slack/adapter.py): the pieces every role shares.
    service: ImagineService
    deliveries: Deliveries
    events: ProcessedEvents
    store: ImageStore
    client: AsyncWebClient
    progress_client: AsyncWebClient
    settings: SlackSettings
    http: aiohttp.ClientSession
    limits: c.Limits
    directory: SlackDirectory
    runner: CommandRunner
    delivery: Delivery | None
    _progress: dict[int, tuple[str, str]]
    _progress_paused_until: float
    _file_hosts: set[str]
    _background: set[asyncio.Task]
    _in_flight: set[asyncio.Task]
    _work: asyncio.Semaphore

    # --- posting -----------------------------------------------------------------------------

    async def _post_progress(self, job: GenerationView, position: int, channel: str) -> None:
        text, blocks = progress_message(job, position)
        ts = await self._post(channel, text, blocks, await self._thread_ts(job, channel))
        for attempt in range(3):
            try:
                await self.deliveries.record_message(Platform.SLACK, channel, ts, job.id, role=MessageRole.PROGRESS)
                break
            except StoreUnavailable:
                # The job is queued and will be delivered: say so, not "something went wrong".
                # Unrecorded, this status message stays when the result arrives (its Cancel
                # button still works: the job id is in it).
                if attempt == 2:
                    log.warning("job %s: status message %s not recorded (database unreachable)", job.id, ts)
                    return
                await asyncio.sleep(0.5)
        self._progress[job.id] = (channel, ts)
        # Written, then checked: a job that finished meanwhile may have been delivered before
        # this message was recorded, and nobody else would clean it up.
        current = await self.deliveries.generation(job.id)
        if GenerationStatus(current.status).is_final:
            if current.status == GenerationStatus.DONE:
                await self._delete(channel, ts)
            else:
                await self._update_quietly(channel, ts, *outcome_message(current))

    async def _progress_location(self, job_id: int) -> tuple[str, str] | None:
        if job_id not in self._progress:
            for message in await self.deliveries.messages_for(job_id):
                if message.role == MessageRole.PROGRESS:
                    self._progress[job_id] = (message.channel_id, message.message_id)
        return self._progress.get(job_id)

    async def _thread_ts(self, job: GenerationView, channel: str) -> str | None:
        """The thread a job's messages go into: its root job's result message, in this channel."""
        root_id = job.thread_root_id or job.id
        if root_id != job.id:
            root = await self.deliveries.generation(root_id)
            if root.reply_target.get("channel") == channel:
                if root.reply_target.get("thread_ts"):
                    return root.reply_target["thread_ts"]  # the root itself lives in a thread
                for message in await self.deliveries.messages_for(root_id):
                    if message.channel_id == channel and message.role == MessageRole.RESULT:
                        return message.message_id
        return job.reply_target.get("thread_ts")

    async def _post(
        self,
        channel: str,
        text: str,
        blocks: list[dict],
        thread_ts: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        arguments: dict[str, Any] = {
            "channel": channel,
            "text": text,
            "blocks": blocks,
            "unfurl_links": False,
            "unfurl_media": False,
        }
        if thread_ts:
            arguments["thread_ts"] = thread_ts
        if metadata:
            arguments["metadata"] = metadata
        try:
            response = await self.client.chat_postMessage(**arguments)
        except SlackApiError as error:
            if api_error(error) != "not_in_channel":
                raise
            # A public channel the bot was never invited to: join it (channels:join) and retry.
            # A private one cannot be joined: then the answer stays "not_in_channel".
            try:
                await self.client.conversations_join(channel=channel)
            except SlackApiError:
                raise error from None
            response = await self.client.chat_postMessage(**arguments)
        return response["ts"]

    async def _upload(self, job: GenerationView, channel: str, thread_ts: str | None) -> str:
        key = job.grid_key or job.images[0].storage_key
        data = await asyncio.to_thread(self.store.get, key)
        data = await asyncio.to_thread(fit_within, data, self.settings.max_upload_bytes)
        extension = "png" if data.startswith(b"\x89PNG") else "jpg"
        response = await self.client.files_upload_v2(
            channel=channel,
            thread_ts=thread_ts,
            file=data,
            filename=f"imagine-{job.id}.{extension}",
            # Escaped like every text the bot sends; short enough that escaping stays under
            # Slack's 1000-character limit.
            title=f"imagine #{job.id}",
            alt_txt=escape(shorten(job.prompt, 240)),
            initial_comment=f"#{job.id} · {len(job.images)} image{'s' if len(job.images) != 1 else ''}",
        )
        file_id = response["files"][0]["id"]
        log.info("job %s: uploaded %d bytes as %s to %s", job.id, len(data), file_id, channel)
        return file_id

    async def _record_share(self, job_id: int, channel: str, file_id: str) -> None:
        """Find the message the grid was shared in (Slack fills it in a moment after the upload)
        and record it, so a reaction on the image itself finds the job."""
        for delay in SHARE_LOOKUP_DELAYS_S:
            await asyncio.sleep(delay)
            try:
                info = await self.client.files_info(file=file_id)
            except SlackApiError as error:
                log.warning("job %s: files.info %s failed: %s", job_id, file_id, api_error(error))
                return
            shares = (info.get("file") or {}).get("shares") or {}
            for visibility in ("public", "private"):
                for share in (shares.get(visibility) or {}).get(channel) or []:
                    await self.deliveries.record_message(
                        Platform.SLACK, channel, share["ts"], job_id, role=MessageRole.SHARE
                    )
                    return
        log.info(
            "job %s: the share of %s never showed in files.info; reactions on it fall back to conversations.history",
            job_id,
            file_id,
        )

    @contextlib.asynccontextmanager
    async def _working(self, *, slot: bool = True) -> AsyncIterator[None]:
        """A slot for one piece of listener work; `close` lets the work in progress finish.
        `slot=False`: tracked for `close` but not made to wait its turn (what Slack gives only
        seconds to do, such as opening a form)."""
        task = asyncio.current_task()
        assert task is not None  # listener work always runs in a task
        self._in_flight.add(task)
        try:
            async with self._work if slot else contextlib.nullcontext():
                yield
        finally:
            self._in_flight.discard(task)

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self, grace_s: float = 10.0) -> None:
        """Let commands in progress finish (up to `grace_s`), then stop background lookups."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=grace_s)
        for task in list(self._background) + list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._background, *self._in_flight, return_exceptions=True)

    async def _delete(self, channel: str, message_id: str) -> None:
        try:
            if message_id.startswith("file:"):
                await self.client.files_delete(file=message_id.removeprefix("file:"))
            else:
                await self.client.chat_delete(channel=channel, ts=message_id)
        except SlackApiError as error:
            if api_error(error) not in GONE:
                raise

    async def _update_quietly(self, channel: str, ts: str, text: str, blocks: list[dict]) -> None:
        try:
            await self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
        except SlackApiError as error:
            if api_error(error) not in GONE:
                raise

    async def _tell(self, channel: str, user: str, text: str) -> None:
        """An ephemeral note to one user (reactions have no response_url)."""
        try:
            await self.client.chat_postEphemeral(channel=channel, user=user, text=text)
        except SlackApiError as error:
            log.warning("could not tell %s in %s: %s", user, channel, api_error(error))

    @staticmethod
    async def _respond_quietly(respond: AsyncRespond, text: str, **options: Any) -> None:
        try:
            await respond(text=text, response_type="ephemeral", **options)
        except Exception:  # noqa: BLE001 - the response_url may have expired; nothing more to do
            log.warning("could not answer through the response_url", exc_info=True)

    @staticmethod
    def _text(reply: Reply, command: c.Command) -> str:
        # The runner escapes what it builds from user text; errors and the usage text come raw.
        return escape(reply.text) if reply.is_error or isinstance(command, c.Help) else reply.text

    async def _after_command(self, actor: Actor, reply: Reply, channel: str) -> str | None:
        """Show a queued job's status message; if the bot cannot post in the channel, cancel the
        job (refunded) and return what to tell the user instead."""
        job = reply.job
        if job is None:
            return None
        try:
            if reply.queue_position is not None:
                await self._post_progress(job, reply.queue_position, channel)
        except StoreUnavailable as error:
            # The job is queued, charged and will be delivered: say that, not "sorry".
            log.warning("job %s: status message not fully set up: %s", job.id, error.__cause__ or error)
        except SlackApiError as error:
            if api_error(error) not in UNREACHABLE:
                raise
            await self.service.cancel(actor, job.id)
            log.info("job %s: cancelled, imagine-bot cannot post in %s (%s)", job.id, channel, api_error(error))
            return (
                "imagine-bot cannot post in this channel, so nothing was queued or charged. "
                "Invite it (`/invite @imagine`) and try again."
            )
        finally:
            if self.delivery is not None and job.status == GenerationStatus.CANCELLED:
                # No worker will publish a wake-up for a cancel: show it now, not at the next
                # sweep. (Not for new jobs: a sweep builds a view of every active job.)
                self.delivery.kick()
        return None
