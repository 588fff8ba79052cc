"""Reactions in Slack: :repeat: / :one:–:four: ask for variations (of one of the bot's images,
or of a picture someone shared, downloaded with the bot token), :x: removes a job's messages.
Part of `SlackAdapter` (bot/slack/adapter.py)."""

from __future__ import annotations

import logging
from urllib.parse import urlparse

from bot import commands as c
from bot.actions import check_upload_size, image_to_vary, remove
from bot.replies import APOLOGY
from bot.slack.blocks import escape
from bot.slack.messages import Messages
from engine.domain.errors import UsageError, UserFacingError
from engine.domain.types import Actor, MessageRole, Platform, RenderParams, VariationRequest

log = logging.getLogger("bot.slack.adapter")

# Reactions that ask for something: image number (None: the image the message shows).
VARY_REACTIONS = {"repeat": None, "one": 1, "two": 2, "three": 3, "four": 4}
REMOVE_REACTION = "x"
#: How many messages before a reply are searched for its thread's parent.
THREAD_SCAN = 100


class Reactions(Messages):
    """reaction_added and the lookups it needs."""

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
                target, message = await self._reacted_to(channel, ts, fetch=ours or reaction == "repeat")
                if target is None and (ours or message is None):
                    return
                actor = await self.directory.actor(body.get("team_id") or "", user)
                if reaction == REMOVE_REACTION:
                    if target is not None:  # only a job's messages are removed this way
                        await self._remove(actor, target[0], channel)
                elif target is not None:
                    generation_id, image_index, role = target
                    image = image_to_vary(generation_id, role, image_index, VARY_REACTIONS[reaction])
                    if image is None:
                        return
                    command = c.Vary(VariationRequest(image))
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

    async def _reacted_to(
        self, channel: str, ts: str, *, fetch: bool
    ) -> tuple[tuple[int, int | None, MessageRole] | None, dict | None]:
        """(job id, image index, role) of a bot message, else the message itself (if `fetch`)."""
        known = await self.deliveries.message_target(Platform.SLACK, channel, ts)
        if known is not None:
            return (known.generation_id, known.image_index, known.role), None
        if not fetch:
            return None, None
        message = await self._fetch_message(channel, ts)
        if message is None:
            return None, None
        for file in message.get("files") or []:
            # The grid's own share message: the upload API never told us its ts, but its file.
            known = await self.deliveries.message_target(Platform.SLACK, channel, f"file:{file.get('id')}")
            if known is not None:
                return (known.generation_id, known.image_index, MessageRole.FILE), None
        return None, message

    async def _fetch_message(self, channel: str, ts: str) -> dict | None:
        """A message by its ts: from the channel's history, or — a reply, which history does not
        hold — from its thread, found among the parents before it whose replies reach it."""
        history = await self.client.conversations_history(
            channel=channel, latest=ts, oldest=ts, inclusive=True, limit=1
        )
        for message in history.get("messages") or []:
            if message.get("ts") == ts:
                return message
        recent = await self.client.conversations_history(channel=channel, latest=ts, inclusive=True, limit=THREAD_SCAN)
        for parent in recent.get("messages") or []:
            if not parent.get("reply_count") or float(parent.get("latest_reply") or 0) < float(ts):
                continue
            replies = await self.client.conversations_replies(
                channel=channel, ts=parent["ts"], oldest=ts, latest=ts, inclusive=True, limit=2
            )
            found = next((m for m in replies.get("messages") or [] if m.get("ts") == ts), None)
            if found is not None:
                return found
        return None

    async def _vary_upload(self, actor: Actor, channel: str, message: dict) -> None:
        """Variations of an image someone shared: download it, queue it, answer in its thread."""
        image = next((f for f in message.get("files") or [] if str(f.get("mimetype", "")).startswith("image/")), None)
        if image is None:
            return
        data = await self._download(image)
        submitted = await self.service.submit_upload_variation(
            actor,
            data,
            RenderParams(),
            reply_target={"channel": channel, "thread_ts": message.get("thread_ts") or message["ts"]},
        )
        await self._post_progress(submitted.generation, submitted.queue_position, channel)

    async def _download(self, file: dict) -> bytes:
        url = file.get("url_private_download") or file.get("url_private") or ""
        limit = self.service.policy.max_upload_bytes
        if urlparse(url).hostname not in self._file_hosts:
            # The bot token goes to Slack's file host and nowhere else.
            raise UsageError("That file is not stored on Slack, so imagine-bot cannot fetch it.")
        check_upload_size(int(file.get("size") or 0), limit)
        headers = {"Authorization": f"Bearer {self.settings.bot_token.get_secret_value()}"}
        async with self.http.get(url, headers=headers, allow_redirects=False) as response:
            if response.status != 200 or response.content_type.startswith("text/html"):
                # files.slack.com answers a missing files:read scope with a login page.
                raise UsageError(
                    "imagine-bot could not download that file "
                    "(it needs the files:read scope and access to the channel)."
                )
            data = await response.content.read(limit + 1)
        if len(data) > limit:
            raise UsageError(f"That file is over {limit / 1e6:.0f} MB; smaller images only.")
        return data

    async def _remove(self, actor: Actor, generation_id: int, channel: str) -> None:
        job, cancelled = await remove(self.service, actor, generation_id)
        if cancelled:  # its status message turns into "cancelled" with the next sweep
            if self.delivery is not None:
                self.delivery.kick()
            return
        for message in await self.deliveries.messages_for(job.id):
            if message.channel_id == channel:
                await self._delete(channel, message.message_id)
        self._progress.pop(job.id, None)
        log.info("job %s: messages removed by %s", job.id, actor.user_id)
