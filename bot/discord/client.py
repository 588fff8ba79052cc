"""The Discord client: minimal intents, no pings, commands and buttons wired to the service.

Dependencies come in through the constructor (the runtime: service, deliveries, image store,
wake-ups); `setup_hook` registers the restart-proof buttons, syncs the slash commands and starts
the delivery loop, whose first sweep delivers whatever finished while the bot was down.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands

from bot.delivery import Delivery
from bot.discord.buttons import HistoryButton, JobButton
from bot.discord.config import DiscordSettings
from bot.discord.delivery import DiscordDelivery
from bot.discord.formatting import NO_PINGS, escape
from bot.discord.identify import IdentifyGate
from bot.discord.interactions import InteractionHandler
from bot.discord.modals import FORM_ID
from bot.discord.options import CheckedCommandTree
from bot.discord.reactions import ReactionHandler
from bot.discord.slash import add_commands
from bot.runner import CommandRunner
from bot.runtime import BotRuntime
from engine.domain.errors import UsageError

log = logging.getLogger(__name__)


def intents_for(settings: DiscordSettings) -> discord.Intents:
    """Guilds (channels, roles: who is a moderator) and reactions; never message content."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_reactions = True
    intents.dm_reactions = settings.dm_reactions
    return intents


class ImagineClient(discord.AutoShardedClient):
    """One process of the bot: the shards it runs (all of them by default, or its share of a
    StatefulSet's), the commands, buttons and reactions of those shards' guilds, and a delivery
    loop that delivers every Discord job, whichever process's shard received its command."""

    def __init__(self, runtime: BotRuntime, settings: DiscordSettings, **options: Any) -> None:
        """`options` go to discord.AutoShardedClient as they are (tests shorten `guild_ready_timeout`)."""
        # imagine-bot never joins voice: no start-up warnings about missing voice libraries.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        shard_ids = settings.my_shard_ids()
        super().__init__(
            intents=intents_for(settings),
            allowed_mentions=NO_PINGS,
            # Reactions are looked up in the database, not in a message cache; members are
            # read from each event: nothing needs caching beyond guilds and their roles.
            max_messages=None,
            member_cache_flags=discord.MemberCacheFlags.none(),
            chunk_guilds_at_startup=False,
            shard_count=settings.shard_count or None,
            # discord.py annotates shard_ids as a list; None (the default) means all of them
            shard_ids=shard_ids,  # type: ignore[arg-type]
            **options,
        )
        self.identify_gate = IdentifyGate(runtime.settings.notify_url)
        self._max_concurrency = 1
        self.runtime = runtime
        self.settings = settings
        service = runtime.service
        self.tree = CheckedCommandTree(self)
        self.tree.error(self._on_command_error)
        runner = CommandRunner(service, escape=escape)
        self.jobs = DiscordDelivery(self, runtime.deliveries, runtime.store)
        self.delivery = Delivery(
            runtime.deliveries,
            self.jobs,
            runtime.wakeups(),
            sweep_interval_s=settings.sweep_interval_s,
            progress_interval_s=settings.progress_interval_s,
            lease_s=settings.delivery_lease_s,
        )
        self.handler = InteractionHandler(
            service, runner, self.jobs, self.delivery.kick, max_working=settings.max_concurrent_commands
        )
        self.reactions = ReactionHandler(
            self,
            service,
            runtime.deliveries,
            runner,
            self.jobs,
            runtime.store,
            notice_ttl_s=settings.notice_ttl_s,
            kick=self.delivery.kick,
        )
        add_commands(self.tree, self.handler, models=service.policy.available_models)
        self._delivering = False

    async def setup_hook(self) -> None:
        self.add_dynamic_items(JobButton, HistoryButton)
        if self.settings.sync_commands:
            await self.sync_commands()
        await self.delivery.start()
        self._delivering = True

    async def launch_shards(self) -> None:
        """Learn Discord's identify concurrency (and, unless configured, its shard count) first."""
        shards, _url, limits = await self.http.get_bot_gateway()
        self._max_concurrency = max(1, int((limits or {}).get("max_concurrency", 1)))
        if self.shard_count is None:
            self.shard_count = shards
        log.info(
            "discord: %d shard(s) in all, this process runs %s (identify concurrency %d)",
            self.shard_count,
            list(self.shard_ids or range(self.shard_count)),
            self._max_concurrency,
        )
        await super().launch_shards()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        # Discord's limit, across processes (discord.py's default sleeps 5 s before each one).
        await self.identify_gate.wait(shard_id or 0, self._max_concurrency)

    async def sync_commands(self) -> None:
        """Register the slash commands with Discord: per guild if configured (instant), else globally."""
        try:
            guilds = self.settings.sync_guild_ids
            for guild_id in guilds:
                guild = discord.Object(guild_id)
                self.tree.copy_global_to(guild=guild)
                synced = await self.tree.sync(guild=guild)
                log.info("synced %d commands to guild %s", len(synced), guild_id)
            if not guilds:
                synced = await self.tree.sync()
                log.info("synced %d global commands", len(synced))
        except discord.HTTPException:
            # Commands registered earlier keep working; a failed sync must not stop the bot.
            log.exception("could not sync the slash commands")

    async def close(self) -> None:
        if self._delivering:
            self._delivering = False
            await self.delivery.stop()
        await self.identify_gate.close()
        await super().close()

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """A Vary (Region) form sent back: answered from its custom_id alone (bot/discord/modals.py)."""
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        custom_id = dict(interaction.data or {}).get("custom_id")
        match = FORM_ID.fullmatch(custom_id) if isinstance(custom_id, str) else None
        if match is not None:
            await self.handler.region_form_submitted(interaction, int(match["job"]), int(match["index"]))

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self.reactions.handle(payload)

    async def _on_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        if isinstance(error, app_commands.TransformerError) and isinstance(error.__cause__, UsageError):
            # An option that does not parse (an image reference, bot/discord/references.py).
            await self.handler.refuse(interaction, error.__cause__.message)
            return
        log.error("command %s failed", interaction.command and interaction.command.qualified_name, exc_info=error)
        await self.handler.apologise(interaction)
