"""Finished jobs → Slack: the adapter's `DeliveryTarget` (bot/delivery.py drives it). Each step
of a delivery is recorded as it is done; a second attempt first looks in Slack for what the
first one posted (by message metadata, by file name), so nothing shows twice. Part of
`SlackAdapter` (bot/slack/adapter.py)."""

from __future__ import annotations

import logging
import time
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.slack.blocks import outcome_message, progress_message, result_message
from bot.slack.messages import UNREACHABLE, Messages
from bot.slack.web import api_error
from engine.domain.types import GenerationStatus, MessageRole, Platform
from engine.domain.views import GenerationView

log = logging.getLogger("bot.slack.adapter")

#: Message metadata event types on the messages a delivery posts: a retried delivery finds them.
RESULT_EVENT = "imagine_result"
OUTCOME_EVENT = "imagine_outcome"
#: How far before a job finished a retried delivery looks for what it posted, and how many
#: pages of history it reads.
LOOKBACK_S = 60
LOOKUP_PAGES = 5


def _metadata(event: str, job: GenerationView) -> dict[str, Any]:
    return {"event_type": event, "event_payload": {"job_id": job.id}}


class SlackDeliveryTarget(Messages):
    """show_progress and deliver, for the shared delivery loop."""

    # --- DeliveryTarget ----------------------------------------------------------------------

    async def show_progress(self, job: GenerationView) -> None:
        if job.status != GenerationStatus.RUNNING or time.monotonic() < self._progress_paused_until:
            return  # queued: the status message already says so; paused: Slack asked us to wait
        location = await self._progress_location(job.id)
        if location is None:
            return
        text, blocks = progress_message(job)
        try:
            await self.progress_client.chat_update(channel=location[0], ts=location[1], text=text, blocks=blocks)
        except SlackApiError as error:
            if error.response.status_code != 429:
                raise
            wait = float(error.response.headers.get("Retry-After") or 30)
            self._progress_paused_until = time.monotonic() + wait
            log.info("progress edits paused for %.0f s (chat.update rate limited)", wait)

    async def deliver(self, job: GenerationView) -> None:
        channel = job.reply_target.get("channel")
        if not channel:
            log.warning("job %s has no Slack channel to deliver to; dropping it", job.id)
            return
        try:
            await self._deliver(job, channel)
        except SlackApiError as error:
            if api_error(error) not in UNREACHABLE:
                raise  # the delivery loop retries after its lease
            # Retrying cannot help (the channel was archived, or the bot removed from it); the
            # images stay in the requester's history and the gallery.
            log.error(
                "job %s: channel %s is unreachable (%s); not delivered to Slack", job.id, channel, api_error(error)
            )

    async def _deliver(self, job: GenerationView, channel: str) -> None:
        posted = await self.deliveries.messages_for(job.id)
        roles = {m.role for m in posted}
        progress = [(m.channel_id, m.message_id) for m in posted if m.role == MessageRole.PROGRESS]
        # A second attempt: the first may have posted a step and died before recording it.
        # Each step is looked up in Slack before it is done again, so nothing shows twice.
        retry = job.delivery_attempts > 1
        if job.status == GenerationStatus.DONE:
            thread_ts = await self._thread_ts(job, channel)
            # Each step is recorded as soon as it is done, so a retried delivery (after a failed
            # upload, say) does only what is left.
            if MessageRole.FILE not in roles:
                file_id = await self._uploaded_file(job, channel) if retry else None
                if file_id is None:
                    file_id = await self._upload(job, channel, thread_ts)
                await self.deliveries.record_message(
                    Platform.SLACK, channel, f"file:{file_id}", job.id, role=MessageRole.FILE
                )
                self._later(self._record_share(job.id, channel, file_id))
            if MessageRole.RESULT not in roles:
                ts = await self._posted(job, channel, thread_ts, RESULT_EVENT) if retry else None
                if ts is None:
                    text, blocks = result_message(job)
                    ts = await self._post(channel, text, blocks, thread_ts, _metadata(RESULT_EVENT, job))
                await self.deliveries.record_message(Platform.SLACK, channel, ts, job.id, role=MessageRole.RESULT)
            for progress_channel, ts in progress:
                await self._delete(progress_channel, ts)
        else:
            text, blocks = outcome_message(job)
            if progress:
                for progress_channel, ts in progress:
                    await self._update_quietly(progress_channel, ts, text, blocks)
            else:
                thread_ts = await self._thread_ts(job, channel)
                if not retry or await self._posted(job, channel, thread_ts, OUTCOME_EVENT) is None:
                    await self._post(channel, text, blocks, thread_ts, _metadata(OUTCOME_EVENT, job))
        self._progress.pop(job.id, None)

    async def _posted(self, job: GenerationView, channel: str, thread_ts: str | None, event: str) -> str | None:
        """The ts of a message an earlier delivery of this job posted (found by its metadata)."""
        oldest = f"{(job.finished_at or job.created_at).timestamp() - LOOKBACK_S:.6f}"
        cursor = None
        for _ in range(LOOKUP_PAGES):
            arguments: dict[str, Any] = {
                "channel": channel,
                "oldest": oldest,
                "limit": 200,
                "include_all_metadata": True,
            }
            if cursor:
                arguments["cursor"] = cursor
            try:
                if thread_ts:
                    page = await self.client.conversations_replies(ts=thread_ts, **arguments)
                else:
                    page = await self.client.conversations_history(**arguments)
            except SlackApiError as error:
                # Cannot look (a missing history scope, a rate limit): post rather than never.
                log.warning(
                    "job %s: could not look for an earlier %s (%s); posting it", job.id, event, api_error(error)
                )
                return None
            for message in page.get("messages") or []:
                metadata = message.get("metadata") or {}
                if (
                    metadata.get("event_type") == event
                    and (metadata.get("event_payload") or {}).get("job_id") == job.id
                ):
                    log.info("job %s: found the %s an earlier delivery posted (%s)", job.id, event, message.get("ts"))
                    return message.get("ts")
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return None
        return None

    async def _uploaded_file(self, job: GenerationView, channel: str) -> str | None:
        """The id of the grid an earlier delivery of this job uploaded, if it did."""
        since = int((job.finished_at or job.created_at).timestamp() - LOOKBACK_S)
        try:
            page = await self.client.files_list(channel=channel, ts_from=str(since), types="images", count=200)
        except SlackApiError as error:
            log.warning("job %s: could not look for an earlier upload (%s); uploading", job.id, api_error(error))
            return None
        for file in page.get("files") or []:
            if str(file.get("name", "")).startswith(f"imagine-{job.id}."):
                log.info("job %s: found the grid an earlier delivery uploaded (%s)", job.id, file.get("id"))
                return file.get("id")
        return None
