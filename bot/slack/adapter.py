"""Slack payloads → neutral commands → the service; jobs → Slack messages.

Every listener's ack function only acks (bolt 1.30 loses an ack whose listener raises right
after it); the form's also checks its answers first, without I/O, as Slack takes a refusal of a
form only in its ack. Its lazy listener relays the work to the adapter's own event loop, where at most
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
- role "result": the caption with the Variations/Upscale/Reroll buttons under the grid (and under
  a single image Vary (Region), Zoom Out and the pans). The root job's result message is the
  thread every variation or edit of it goes into.

Vary (Region) opens a form (bot/slack/forms.py); its submission is answered from the submitted
view alone, on any replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot import commands as c
from bot.delivery import Delivery
from bot.runner import CommandRunner
from bot.slack.blocks import ACTION_PATTERN, escape
from bot.slack.config import SlackSettings
from bot.slack.delivery import SlackDeliveryTarget
from bot.slack.forms import FORM_ID
from bot.slack.identity import SlackDirectory
from bot.slack.listeners import Listeners, Relay, acknowledge, delivery_id, review_region_form
from bot.slack.reactions import Reactions
from engine.domain.types import Platform
from engine.image_files import ImageStore
from engine.service import Deliveries, ImagineService, ProcessedEvents

if TYPE_CHECKING:
    from bot.gallery.links import GalleryLinks

DEFAULT_LIMITS = c.Limits()

log = logging.getLogger("bot.slack.adapter")

__all__ = ["Relay", "SlackAdapter", "acknowledge", "delivery_id"]


class SlackAdapter(Listeners, Reactions, SlackDeliveryTarget):
    """The Slack front-end: its listeners (bot/slack/listeners.py), its reactions
    (bot/slack/reactions.py) and its DeliveryTarget (bot/slack/delivery.py), all posting through
    bot/slack/messages.py and sharing what is set up here."""

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
        limits: c.Limits = DEFAULT_LIMITS,
        gallery_links: GalleryLinks | None = None,
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
        self._file_hosts = {host for host in ("files.slack.com", urlparse(settings.api_url).hostname) if host}
        self._background: set[asyncio.Task] = set()
        self._in_flight: set[asyncio.Task] = set()

    def register(self, app: AsyncApp, relay: Relay) -> None:
        """Listen on `app`. Its loop only acks; `relay` hands each piece of work to this adapter's
        loop, so an ack never waits behind a database transaction or a Slack call."""

        async def skip_repeats(
            req: AsyncBoltRequest, body: dict, next: Callable[[], Awaitable[BoltResponse]]
        ) -> BoltResponse:
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

        async def imagine(command: dict, respond: AsyncRespond) -> None:
            relay(self.imagine_command(command, respond))

        async def imagine_admin(command: dict, respond: AsyncRespond) -> None:
            relay(self.admin_command(command, respond))

        async def button(body: dict, action: dict, respond: AsyncRespond) -> None:
            relay(self.button_pressed(body, action, respond))

        async def region_form(body: dict, view: dict) -> None:
            relay(self.region_form_sent(body, view))

        async def reaction(event: dict, body: dict, context: AsyncBoltContext) -> None:
            relay(self.reaction_added(event, body, context.bot_user_id))

        app.middleware(skip_repeats)
        app.command("/imagine")(ack=acknowledge, lazy=[imagine])
        app.command("/imagine-admin")(ack=acknowledge, lazy=[imagine_admin])
        app.action(ACTION_PATTERN)(ack=acknowledge, lazy=[button])
        # The form's ack checks its answers (pure, no I/O): Slack takes a refusal only there.
        app.view(FORM_ID)(ack=review_region_form, lazy=[region_form])
        app.event("reaction_added")(ack=acknowledge, lazy=[reaction])
