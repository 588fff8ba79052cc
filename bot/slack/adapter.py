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
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient

from bot import commands as c
from bot.delivery import Delivery
from bot.runner import CommandRunner
from bot.slack.blocks import escape
from bot.slack.config import SlackSettings
from bot.slack.delivery import SlackDeliveryTarget
from bot.slack.identity import SlackDirectory
from bot.slack.listeners import Listeners, Relay, acknowledge, delivery_id
from bot.slack.reactions import Reactions
from engine.domain.types import Platform
from engine.image_files import ImageStore
from engine.service import Deliveries, ImagineService, ProcessedEvents

if TYPE_CHECKING:
    from bot.gallery.links import GalleryLinks

DEFAULT_LIMITS = c.Limits()

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
        self._file_hosts = {"files.slack.com", urlparse(settings.api_url).hostname}
        self._background: set[asyncio.Task] = set()
        self._in_flight: set[asyncio.Task] = set()
