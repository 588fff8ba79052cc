"""Slack payloads → neutral commands → the service; jobs → Slack messages.

Every listener's ack function only acks (bolt 1.30 loses an ack whose listener raises right
after it). Its lazy listener relays the work to the adapter's own event loop, where at most
`concurrent_work` pieces run at once: bolt's loop (bot.slack.app.Ingress) only verifies, acks
and relays. Retried events are dropped by event id in a middleware, once across replicas (the
processed-events table).

Messages a job gets, each recorded (`Deliveries.record_message`) so reactions and buttons find
the job:
- role "progress": one status message per job, posted when it is queued and edited as it runs
  (Cancel button); deleted when the result arrives, or turned into the failure notice;
- role "file": the grid uploaded with files_upload_v2 (message id `file:<file id>`: the
  upload API answers with the file, not the message);
- role "share": the message the grid was shared in, found with files.info shortly after;
- role "result": the caption with the Variations/Upscale/Reroll buttons under the grid. The root
  job's result message is the thread every variation of it goes into.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlparse

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import commands as c
from bot.delivery import Delivery
from bot.replies import Reply, shorten
from bot.runner import CommandRunner
from bot.slack.blocks import (
    ACTION_PATTERN,
    escape,
    outcome_message,
    parse_action,
    progress_message,
    result_message,
)
from bot.slack.config import SlackSettings
from bot.slack.identity import SlackDirectory
from bot.slack.web import api_error
from engine.domain.errors import StoreUnavailable, UsageError, UserFacingError
from engine.domain.types import (
    Actor,
    GenerationStatus,
    ImageRef,
    MessageRole,
    Platform,
    RenderParams,
    VariationRequest,
)
from engine.domain.views import GenerationView
from engine.images import fit_within
from engine.service import Deliveries, ImagineService, ProcessedEvents
from engine.image_files import ImageStore

log = logging.getLogger(__name__)

#: Message metadata event types on the messages a delivery posts: a retried delivery finds them.
RESULT_EVENT = "imagine_result"
OUTCOME_EVENT = "imagine_outcome"
#: How far before a job finished a retried delivery looks for what it posted, and how many
#: pages of history it reads.
LOOKBACK_S = 60
LOOKUP_PAGES = 5
#: How many messages before a reply are searched for its thread's parent.
THREAD_SCAN = 100


def _metadata(event: str, job: GenerationView) -> dict[str, Any]:
    return {"event_type": event, "event_payload": {"job_id": job.id}}

# Reactions that ask for something: image number (None: the image the message shows).
VARY_REACTIONS = {"repeat": None, "one": 1, "two": 2, "three": 3, "four": 4}
REMOVE_REACTION = "x"
APOLOGY = "Sorry, something went wrong on imagine-bot's side; it has been logged."
# Slack API errors that mean "already gone": deleting twice is not a failure.
_GONE = {"message_not_found", "file_not_found", "file_deleted", "cant_delete_message"}
SHARE_LOOKUP_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0)
# Slack API errors that no retry fixes: the bot cannot post in that channel.
_UNREACHABLE = {"channel_not_found", "not_in_channel", "is_archived"}


Relay = Callable[[Coroutine[Any, Any, Any]], concurrent.futures.Future]


def delivery_id(body: dict, headers: dict[str, Any]) -> str | None:
    """What makes one request from Slack unique, for refusing it a second time: an event's
    `event_id` (Slack's retries repeat it), else the request's signature — a replay of a slash
    command or a button press carries the same one, and a new one cannot be made without the
    signing secret. None in Socket Mode (no signatures; the socket is authenticated)."""
    if body.get("type") == "event_callback" and body.get("event_id"):
        return str(body["event_id"])[:120]
    signature = headers.get("x-slack-signature") or []
    signature = signature[0] if isinstance(signature, list) and signature else signature
    if isinstance(signature, str) and signature.startswith("v0="):
        return f"request:{signature[3:67]}"
    return None


async def acknowledge(ack) -> None:
    """Only ack: anything that could raise belongs in the lazy listener."""
    await ack()


class SlackAdapter:
    """The Slack front-end's listeners and its DeliveryTarget."""

    platform = Platform.SLACK

    def __init__(
        self,
        service: ImagineService,
        deliveries: Deliveries,
        events: ProcessedEvents,
        store: ImageStore,
        client: AsyncWebClient,
        settings: SlackSettings,
        *,
        http: aiohttp.ClientSession,
        progress_client: AsyncWebClient | None = None,
        limits: c.Limits = c.Limits(),
        gallery_links=None,
    ) -> None:
        self.service = service
        self.deliveries = deliveries
        self.events = events
        self.store = store
        self.client = client
        # Progress edits are best effort: a 429 pauses them instead of holding up deliveries.
        self.progress_client = progress_client or client
        self._progress_paused_until = 0.0
        self.settings = settings
        self.http = http
        self.limits = limits
        self.directory = SlackDirectory(client, cache_s=settings.directory_cache_s)
        self.runner = CommandRunner(service, escape=escape, gallery_links=gallery_links)
        self.delivery: Delivery | None = None
        self._work = asyncio.Semaphore(max(1, settings.concurrent_work))
        self._progress: dict[int, tuple[str, str]] = {}  # job id → (channel, ts) of its status message
        self._file_hosts = {"files.slack.com", urlparse(settings.api_url).hostname}
        self._background: set[asyncio.Task] = set()
        self._in_flight: set[asyncio.Task] = set()

    def register(self, app: AsyncApp, relay: Relay) -> None:
        """Listen on `app`. Its loop only acks; `relay` hands each piece of work to this adapter's
        loop, so an ack never waits behind a database transaction or a Slack call."""

        async def skip_repeats(req, body: dict, next) -> BoltResponse:
            delivery = delivery_id(body, req.headers)
            if delivery:
                # The ack is this HTTP answer, so this one insert comes before it: it decides
                # whether any work starts at all, on whichever replica the repeat reaches.
                try:
                    first = await asyncio.wrap_future(relay(self.events.first_time(Platform.SLACK, delivery)))
                except Exception as error:  # noqa: BLE001 - unsure: let Slack retry later rather than act twice
                    log.warning("%s: could not record it (%s); asking Slack to retry", delivery, error)
                    return BoltResponse(status=503, body="")
                if not first:
                    log.info("%s was already handled; skipping the repeat", delivery)
                    return BoltResponse(status=200, body="")
            return await next()

        async def imagine(command: dict, respond) -> None:
            relay(self.imagine_command(command, respond))

        async def imagine_admin(command: dict, respond) -> None:
            relay(self.admin_command(command, respond))

        async def button(body: dict, action: dict, respond) -> None:
            relay(self.button_pressed(body, action, respond))

        async def reaction(event: dict, body: dict, context) -> None:
            relay(self.reaction_added(event, body, context.bot_user_id))

        app.middleware(skip_repeats)
        app.command("/imagine")(ack=acknowledge, lazy=[imagine])
        app.command("/imagine-admin")(ack=acknowledge, lazy=[imagine_admin])
        app.action(ACTION_PATTERN)(ack=acknowledge, lazy=[button])
        app.event("reaction_added")(ack=acknowledge, lazy=[reaction])

    # --- slash commands ----------------------------------------------------------------------

    async def imagine_command(self, command: dict, respond) -> None:
        """`/imagine <prompt | history | quota | thread N | vary … | blend … | …>`."""
        await self._slash(command, respond, lambda text: c.parse_imagine_text(text, self.limits))

    async def admin_command(self, command: dict, respond) -> None:
        """`/imagine-admin quota|ban|unban|block-term|unblock-term|audit|stats|mod-role …`."""
        await self._slash(command, respond, lambda text: c.parse_admin(text.split()))

    async def _slash(self, command: dict, respond, parse) -> None:
        async with self._working():
            started = time.perf_counter()
            try:
                try:
                    parsed = parse(command.get("text") or "")
                except UsageError as error:
                    await respond(text=escape(error.message), response_type="ephemeral")
                    return
                actor = await self.directory.actor(
                    command["team_id"], command["user_id"], team_name=command.get("team_domain", "")
                )
                channel = command["channel_id"]
                reply = await self.runner.run(actor, parsed, {"channel": channel})
                text = self._text(reply, parsed)
                if reply.job is not None:
                    text = await self._after_command(actor, reply, channel) or text
                public = not (reply.ephemeral or reply.is_error or reply.job)
                await respond(text=text, response_type="in_channel" if public else "ephemeral")
                log.info("%s by %s/%s: %s in %.0f ms", command.get("command"), command["team_id"],
                         command["user_id"], type(parsed).__name__, (time.perf_counter() - started) * 1000)
            except Exception:  # noqa: BLE001 - the command was acked: tell the user, never go silent
                log.exception("%s by %s failed after the ack", command.get("command"), command.get("user_id"))
                await self._respond_quietly(respond, APOLOGY)

    @staticmethod
    def _text(reply: Reply, command: c.Command) -> str:
        # The runner escapes what it builds from user text; errors and the usage text come raw.
        return escape(reply.text) if reply.is_error or isinstance(command, c.Help) else reply.text

    async def _after_command(self, actor: Actor, reply: Reply, channel: str) -> str | None:
        """Show a queued job's status message; if the bot cannot post in the channel, cancel the
        job (refunded) and return what to tell the user instead."""
        try:
            if reply.queue_position is not None:
                await self._post_progress(reply.job, reply.queue_position, channel)
        except StoreUnavailable as error:
            # The job is queued, charged and will be delivered: say that, not "sorry".
            log.warning("job %s: status message not fully set up: %s", reply.job.id, error.__cause__ or error)
        except SlackApiError as error:
            if api_error(error) not in _UNREACHABLE:
                raise
            await self.service.cancel(actor, reply.job.id)
            log.info("job %s: cancelled, imagine-bot cannot post in %s (%s)", reply.job.id, channel,
                     api_error(error))
            return ("imagine-bot cannot post in this channel, so nothing was queued or charged. "
                    "Invite it (`/invite @imagine`) and try again.")
        finally:
            if self.delivery is not None and reply.job.status == GenerationStatus.CANCELLED:
                # No worker will publish a wake-up for a cancel: show it now, not at the next
                # sweep. (Not for new jobs: a sweep builds a view of every active job.)
                self.delivery.kick()
        return None

    # --- buttons -----------------------------------------------------------------------------

    async def button_pressed(self, body: dict, action: dict, respond) -> None:
        """Variations n, Upscale n, Reroll, Cancel (their meaning is all in the action id)."""
        async with self._working():
            try:
                try:
                    press = parse_action(action.get("action_id", ""), action.get("value", ""))
                except UserFacingError as error:
                    await self._respond_quietly(respond, escape(error.message), replace_original=False)
                    return
                if press is None:
                    return
                channel = body["channel"]["id"]
                user = body["user"]
                team = (body.get("team") or {}).get("id") or user.get("team_id")
                actor = await self.directory.actor(team, user["id"])
                match press.kind:
                    case "vary":
                        command = c.Vary(VariationRequest(ImageRef(press.generation_id, press.index)))
                    case "upscale":
                        command = c.Upscale(ImageRef(press.generation_id, press.index))
                    case "reroll":
                        command = c.Reroll(press.generation_id)
                    case _:
                        command = c.Cancel(press.generation_id)
                reply = await self.runner.run(actor, command, {"channel": channel})
                if reply.queue_position is None:  # an error, or what a cancel did
                    await respond(text=self._text(reply, command), response_type="ephemeral",
                                  replace_original=False)
                if reply.job is not None:
                    await self._after_command(actor, reply, channel)
            except Exception:  # noqa: BLE001
                log.exception("button %s failed after the ack", action.get("action_id"))
                await self._respond_quietly(respond, APOLOGY, replace_original=False)

    # --- reactions ---------------------------------------------------------------------------

    async def reaction_added(self, event: dict, body: dict, bot_user_id: str | None) -> None:
        """:repeat:/:one:–:four: ask for variations, :x: removes a job's messages."""
        reaction = (event.get("reaction") or "").split("::")[0]  # drop a skin-tone suffix
        item = event.get("item") or {}
        if item.get("type") != "message" or (reaction not in VARY_REACTIONS and reaction != REMOVE_REACTION):
            return
        async with self._working():
            channel, ts, user = item["channel"], item["ts"], event["user"]
            try:
                # Only messages of the bot (a grid share not yet recorded) and pictures people
                # shared (for :repeat:) are worth fetching; other reactions are just reactions.
                ours = event.get("item_user") == bot_user_id
                target, message = await self._reacted_to(
                    channel, ts, fetch=ours or reaction == "repeat")
                if target is None and (ours or message is None):
                    return
                actor = await self.directory.actor(body.get("team_id") or "", user)
                if reaction == REMOVE_REACTION:
                    if target is not None:  # only a job's messages are removed this way
                        await self._remove(actor, target[0], channel)
                elif target is not None:
                    generation_id, image_index = target
                    index = VARY_REACTIONS[reaction] or image_index
                    command = c.Vary(VariationRequest(ImageRef(generation_id, index)))
                    reply = await self.runner.run(actor, command, {"channel": channel})
                    if reply.queue_position is None:
                        await self._tell(channel, user, self._text(reply, command))
                    else:
                        await self._after_command(actor, reply, channel)
                elif message is not None and VARY_REACTIONS[reaction] is None:
                    await self._vary_upload(actor, channel, message)
            except UserFacingError as error:
                await self._tell(channel, user, escape(error.message))
            except Exception:  # noqa: BLE001
                log.exception("reaction %s on %s/%s failed", reaction, channel, ts)
                await self._tell(channel, user, APOLOGY)

    async def _reacted_to(self, channel: str, ts: str, *, fetch: bool
                          ) -> tuple[tuple[int, int | None] | None, dict | None]:
        """(job id, image index) of a bot message, else the message itself (if `fetch`)."""
        known = await self.deliveries.message_target(Platform.SLACK, channel, ts)
        if known is not None:
            return (known.generation_id, known.image_index), None
        if not fetch:
            return None, None
        message = await self._fetch_message(channel, ts)
        if message is None:
            return None, None
        for file in message.get("files") or []:
            # The grid's own share message: the upload API never told us its ts, but its file.
            known = await self.deliveries.message_target(Platform.SLACK, channel, f"file:{file.get('id')}")
            if known is not None:
                return (known.generation_id, known.image_index), None
        return None, message

    async def _fetch_message(self, channel: str, ts: str) -> dict | None:
        """A message by its ts: from the channel's history, or — a reply, which history does not
        hold — from its thread, found among the parents before it whose replies reach it."""
        history = await self.client.conversations_history(
            channel=channel, latest=ts, oldest=ts, inclusive=True, limit=1)
        for message in history.get("messages") or []:
            if message.get("ts") == ts:
                return message
        recent = await self.client.conversations_history(channel=channel, latest=ts, inclusive=True,
                                                         limit=THREAD_SCAN)
        for parent in recent.get("messages") or []:
            if not parent.get("reply_count") or float(parent.get("latest_reply") or 0) < float(ts):
                continue
            replies = await self.client.conversations_replies(
                channel=channel, ts=parent["ts"], oldest=ts, latest=ts, inclusive=True, limit=2)
            found = next((m for m in replies.get("messages") or [] if m.get("ts") == ts), None)
            if found is not None:
                return found
        return None

    async def _vary_upload(self, actor: Actor, channel: str, message: dict) -> None:
        """Variations of an image someone shared: download it, queue it, answer in its thread."""
        image = next((f for f in message.get("files") or []
                      if str(f.get("mimetype", "")).startswith("image/")), None)
        if image is None:
            return
        data = await self._download(image)
        submitted = await self.service.submit_upload_variation(
            actor, data, RenderParams(),
            reply_target={"channel": channel, "thread_ts": message.get("thread_ts") or message["ts"]},
        )
        await self._post_progress(submitted.generation, submitted.queue_position, channel)

    async def _download(self, file: dict) -> bytes:
        url = file.get("url_private_download") or file.get("url_private") or ""
        limit = self.service.policy.max_upload_bytes
        if urlparse(url).hostname not in self._file_hosts:
            # The bot token goes to Slack's file host and nowhere else.
            raise UsageError("That file is not stored on Slack, so imagine-bot cannot fetch it.")
        if int(file.get("size") or 0) > limit:
            raise UsageError(f"That file is {file['size'] / 1e6:.1f} MB; images up to "
                             f"{limit / 1e6:.0f} MB are accepted.")
        headers = {"Authorization": f"Bearer {self.settings.bot_token.get_secret_value()}"}
        async with self.http.get(url, headers=headers, allow_redirects=False) as response:
            if response.status != 200 or response.content_type.startswith("text/html"):
                # files.slack.com answers a missing files:read scope with a login page.
                raise UsageError("imagine-bot could not download that file "
                                 "(it needs the files:read scope and access to the channel).")
            data = await response.content.read(limit + 1)
        if len(data) > limit:
            raise UsageError(f"That file is over {limit / 1e6:.0f} MB; smaller images only.")
        return data

    async def _remove(self, actor: Actor, generation_id: int, channel: str) -> None:
        job = await self.service.authorize_removal(actor, generation_id)
        if job.status in (GenerationStatus.QUEUED, GenerationStatus.RUNNING):
            await self.service.cancel(actor, job.id)  # or its result would arrive after all
        for message in await self.deliveries.messages_for(job.id):
            if message.channel_id == channel:
                await self._delete(channel, message.message_id)
        self._progress.pop(job.id, None)
        log.info("job %s: messages removed by %s", job.id, actor.user_id)

    # --- DeliveryTarget ----------------------------------------------------------------------

    async def show_progress(self, job: GenerationView) -> None:
        if job.status != GenerationStatus.RUNNING or time.monotonic() < self._progress_paused_until:
            return  # queued: the status message already says so; paused: Slack asked us to wait
        location = await self._progress_location(job.id)
        if location is None:
            return
        text, blocks = progress_message(job)
        try:
            await self.progress_client.chat_update(channel=location[0], ts=location[1], text=text,
                                                   blocks=blocks)
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
            if api_error(error) not in _UNREACHABLE:
                raise  # the delivery loop retries after its lease
            # Retrying cannot help (the channel was archived, or the bot removed from it); the
            # images stay in the requester's history and the gallery.
            log.error("job %s: channel %s is unreachable (%s); not delivered to Slack", job.id,
                      channel, api_error(error))

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
                await self.deliveries.record_message(Platform.SLACK, channel, f"file:{file_id}", job.id,
                                                     role=MessageRole.FILE)
                self._later(self._record_share(job.id, channel, file_id))
            if MessageRole.RESULT not in roles:
                ts = await self._posted(job, channel, thread_ts, RESULT_EVENT) if retry else None
                if ts is None:
                    text, blocks = result_message(job)
                    ts = await self._post(channel, text, blocks, thread_ts, _metadata(RESULT_EVENT, job))
                await self.deliveries.record_message(Platform.SLACK, channel, ts, job.id,
                                                     role=MessageRole.RESULT)
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
            arguments: dict[str, Any] = {"channel": channel, "oldest": oldest, "limit": 200,
                                         "include_all_metadata": True}
            if cursor:
                arguments["cursor"] = cursor
            try:
                if thread_ts:
                    page = await self.client.conversations_replies(ts=thread_ts, **arguments)
                else:
                    page = await self.client.conversations_history(**arguments)
            except SlackApiError as error:
                # Cannot look (a missing history scope, a rate limit): post rather than never.
                log.warning("job %s: could not look for an earlier %s (%s); posting it", job.id, event,
                            api_error(error))
                return None
            for message in page.get("messages") or []:
                metadata = message.get("metadata") or {}
                if (metadata.get("event_type") == event
                        and (metadata.get("event_payload") or {}).get("job_id") == job.id):
                    log.info("job %s: found the %s an earlier delivery posted (%s)", job.id, event,
                             message.get("ts"))
                    return message.get("ts")
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return None
        return None

    async def _uploaded_file(self, job: GenerationView, channel: str) -> str | None:
        """The id of the grid an earlier delivery of this job uploaded, if it did."""
        since = int((job.finished_at or job.created_at).timestamp() - LOOKBACK_S)
        try:
            page = await self.client.files_list(channel=channel, ts_from=since, types="images", count=200)
        except SlackApiError as error:
            log.warning("job %s: could not look for an earlier upload (%s); uploading", job.id, api_error(error))
            return None
        for file in page.get("files") or []:
            if str(file.get("name", "")).startswith(f"imagine-{job.id}."):
                log.info("job %s: found the grid an earlier delivery uploaded (%s)", job.id, file.get("id"))
                return file.get("id")
        return None

    # --- posting -----------------------------------------------------------------------------

    async def _post_progress(self, job: GenerationView, position: int, channel: str) -> None:
        text, blocks = progress_message(job, position)
        ts = await self._post(channel, text, blocks, await self._thread_ts(job, channel))
        for attempt in range(3):
            try:
                await self.deliveries.record_message(Platform.SLACK, channel, ts, job.id,
                                                     role=MessageRole.PROGRESS)
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

    async def _post(self, channel: str, text: str, blocks: list[dict], thread_ts: str | None = None,
                    metadata: dict[str, Any] | None = None) -> str:
        arguments: dict[str, Any] = {"channel": channel, "text": text, "blocks": blocks,
                                     "unfurl_links": False, "unfurl_media": False}
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
            channel=channel, thread_ts=thread_ts, file=data, filename=f"imagine-{job.id}.{extension}",
            # Escaped like every text the bot sends; short enough that escaping stays under
            # Slack's 1000-character limit.
            title=f"imagine #{job.id}", alt_txt=escape(shorten(job.prompt, 240)),
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
                    await self.deliveries.record_message(Platform.SLACK, channel, share["ts"], job_id,
                                                         role=MessageRole.SHARE)
                    return
        log.info("job %s: the share of %s never showed in files.info; reactions on it fall back "
                 "to conversations.history", job_id, file_id)

    @contextlib.asynccontextmanager
    async def _working(self):
        """A slot for one piece of listener work; `close` lets the work in progress finish."""
        task = asyncio.current_task()
        self._in_flight.add(task)
        try:
            async with self._work:
                yield
        finally:
            self._in_flight.discard(task)

    def _later(self, work) -> None:
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
            if api_error(error) not in _GONE:
                raise

    async def _update_quietly(self, channel: str, ts: str, text: str, blocks: list[dict]) -> None:
        try:
            await self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
        except SlackApiError as error:
            if api_error(error) not in _GONE:
                raise

    async def _tell(self, channel: str, user: str, text: str) -> None:
        """An ephemeral note to one user (reactions have no response_url)."""
        try:
            await self.client.chat_postEphemeral(channel=channel, user=user, text=text)
        except SlackApiError as error:
            log.warning("could not tell %s in %s: %s", user, channel, api_error(error))

    @staticmethod
    async def _respond_quietly(respond, text: str, **options: Any) -> None:
        try:
            await respond(text=text, response_type="ephemeral", **options)
        except Exception:  # noqa: BLE001 - the response_url may have expired; nothing more to do
            log.warning("could not answer through the response_url", exc_info=True)
