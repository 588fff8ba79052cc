"""The slash commands: their typed options, as Discord shows them, turned into neutral commands.

Option ranges and lengths here are what Discord's client offers; Discord does not enforce them
for the bot, so every value is checked again in code (the handler and the service).
`/imagine-admin` is visible to Manage Server by default, but server admins can change that:
the service checks moderator rights on every call.
"""

from __future__ import annotations

import discord
from discord import app_commands

from bot import commands as c
from bot.discord.interactions import InteractionHandler
from bot.discord.references import Image
from engine.domain import limits
from engine.domain.edits import REGION_NAMES
from engine.domain.limits import MAX_SEED
from engine.domain.types import ASPECTS, PRIORS, ImagineRequest, QuotaTarget, RenderParams

Images = app_commands.Range[int, 1, 4]
Steps = app_commands.Range[int, 2, 1000]
Guidance = app_commands.Range[float, 0.0, 100.0]
Seed = app_commands.Range[int, 0, MAX_SEED]
Strength = app_commands.Range[float, *limits.VARIATION_STRENGTH]
Target = discord.Member | discord.User | discord.Role  # a "mentionable" option

TARGET_HELP = "A member or a role (@everyone for all); empty: the server's default"
ASPECT_CHOICES = [app_commands.Choice(name=a, value=a) for a in ASPECTS]
PRIOR_CHOICES = [app_commands.Choice(name=p, value=p) for p in PRIORS]
IMAGINE_HELP = {
    "prompt": "What to imagine",
    "negative": "What to keep out of the picture",
    "seed": "Seed for a repeatable result",
    "n": "How many images (1-4; each costs one image of quota)",
    "aspect": "Aspect ratio",
    "steps": "Diffusion steps (more: slower, sometimes finer)",
    "guidance": "How closely to follow the prompt",
    "prior": "How the prompt becomes an image embedding (unCLIP's priors; default diffusion)",
    "model": "Which model renders it",
}


def render_params(
    n: int | None,
    aspect: str | None,
    steps: int | None,
    guidance: float | None,
    strength: float | None = None,
    prior: str | None = None,
) -> RenderParams:
    # `steps` sets the prior's and the decoder's steps, as `--steps` does in text commands.
    return RenderParams(
        n=n or 4,
        prior_steps=steps,
        decoder_steps=steps,
        decoder_guidance=guidance,
        aspect=aspect or "1:1",
        strength=strength,
        prior=prior,
    )


def quota_target(target: Target | None) -> QuotaTarget:
    """A typed target as whom a quota is about: a role (`@everyone` is the guild's role), a
    member, or — left empty — the server's default."""
    if target is None:
        return QuotaTarget("team")
    if isinstance(target, discord.Role):
        return QuotaTarget("team") if target.is_default() else QuotaTarget("role", str(target.id))
    return QuotaTarget("user", str(target.id))


def add_commands(tree: app_commands.CommandTree, handler: InteractionHandler, *, models: tuple[str, ...]) -> None:  # noqa: C901 - one block per command
    """Register every imagine-bot command on the tree (offering `model` only if there is a choice)."""

    @app_commands.guild_only()
    @app_commands.describe(**{k: v for k, v in IMAGINE_HELP.items() if k != "model"})
    @app_commands.choices(aspect=ASPECT_CHOICES, prior=PRIOR_CHOICES)
    async def imagine(
        interaction: discord.Interaction,
        prompt: str,
        negative: str | None = None,
        seed: Seed | None = None,
        n: Images | None = None,
        aspect: str | None = None,
        steps: Steps | None = None,
        guidance: Guidance | None = None,
        prior: str | None = None,
    ) -> None:
        params = render_params(n, aspect, steps, guidance, prior=prior)
        await handler.imagine(interaction, ImagineRequest(prompt, negative, seed, None, params))

    @app_commands.guild_only()
    @app_commands.describe(**IMAGINE_HELP)
    @app_commands.choices(aspect=ASPECT_CHOICES, prior=PRIOR_CHOICES)
    @app_commands.autocomplete(model=handler.model_choices)
    async def imagine_with_model(
        interaction: discord.Interaction,
        prompt: str,
        negative: str | None = None,
        seed: Seed | None = None,
        n: Images | None = None,
        aspect: str | None = None,
        steps: Steps | None = None,
        guidance: Guidance | None = None,
        prior: str | None = None,
        model: str | None = None,
    ) -> None:
        params = render_params(n, aspect, steps, guidance, prior=prior)
        await handler.imagine(interaction, ImagineRequest(prompt, negative, seed, model, params))

    tree.add_command(
        app_commands.Command(
            name="imagine",
            description="Imagine an image from a text prompt",
            callback=imagine_with_model if len(models) > 1 else imagine,
        )
    )

    @tree.command(name="vary", description="Variations of one of your images, or of a file you upload")
    @app_commands.guild_only()
    @app_commands.describe(
        image="One of imagine-bot's images: 12:3, last:2, or a link to its message",
        upload="Or a file of your own",
        strength="How far from the source (0.05 close to 1 free)",
        toward="Turn it toward this text, e.g. 'in winter'",
        amount="How far toward that text (0.05-1)",
        n="How many variations (1-4)",
        seed="Seed for a repeatable result",
    )
    async def vary(
        interaction: discord.Interaction,
        image: Image | None = None,
        upload: discord.Attachment | None = None,
        strength: Strength | None = None,
        toward: str | None = None,
        amount: Strength | None = None,
        n: Images | None = None,
        seed: Seed | None = None,
    ) -> None:
        await handler.vary(
            interaction,
            upload=upload,
            image=image,
            seed=seed,
            toward=toward,
            amount=amount,
            params=render_params(n, None, None, None, strength),
        )

    @tree.command(name="blend", description="Blend 2-4 of imagine-bot's images into new ones")
    @app_commands.guild_only()
    @app_commands.describe(
        first="An image: 12:3, last:2, or a link to its message",
        second="Another image",
        third="A third image (optional)",
        fourth="A fourth image (optional)",
        weights="How much of each, e.g. '1, 2'",
        strip="Instead: a strip of 3-8 frames from first to second",
        n="How many images (1-4)",
        seed="Seed for a repeatable result",
    )
    async def blend(
        interaction: discord.Interaction,
        first: Image,
        second: Image,
        third: Image | None = None,
        fourth: Image | None = None,
        weights: str | None = None,
        strip: app_commands.Range[int, *limits.STRIP_FRAMES] | None = None,
        n: Images | None = None,
        seed: Seed | None = None,
    ) -> None:
        images = [image for image in (first, second, third, fourth) if image is not None]
        await handler.blend(interaction, images, weights, render_params(n, None, None, None), seed, strip)

    @tree.command(name="history", description="Your recent jobs (only you see them)")
    @app_commands.guild_only()
    @app_commands.describe(page="Which page (newest first)")
    async def history(
        interaction: discord.Interaction, page: app_commands.Range[int, 1, limits.MAX_HISTORY_PAGE] | None = None
    ) -> None:
        await handler.history(interaction, page or 1)

    @tree.command(name="thread", description="The variation tree a job belongs to")
    @app_commands.guild_only()
    @app_commands.describe(job="A job number (your latest when empty)")
    async def thread(
        interaction: discord.Interaction, job: app_commands.Range[int, 1, limits.MAX_ID] | None = None
    ) -> None:
        await handler.run(interaction, c.Thread(job), ephemeral=False)

    @tree.command(name="quota", description="How many images you have left today, and when it resets")
    @app_commands.guild_only()
    async def quota(interaction: discord.Interaction) -> None:
        await handler.run(interaction, c.Quota(), ephemeral=True)

    region_choices = [app_commands.Choice(name=r, value=r) for r in REGION_NAMES]

    @tree.command(name="edit", description="Redraw part of one of your images from a prompt")
    @app_commands.guild_only()
    @app_commands.describe(
        image="One of imagine-bot's images: 12:3, last:2, or a link to its message",
        region="Which part to redraw",
        prompt="What to draw there",
        box="Or a box: X,Y,W,H as fractions of the image, e.g. 0.5,0,0.5,1",
        n="How many images (1-4)",
        seed="Seed for a repeatable result",
    )
    @app_commands.choices(region=region_choices)
    async def edit(
        interaction: discord.Interaction,
        image: Image,
        prompt: str,
        region: str | None = None,
        box: str | None = None,
        n: Images | None = None,
        seed: Seed | None = None,
    ) -> None:
        await handler.edit(interaction, image, op="region", region=region, box=box, prompt=prompt, n=n, seed=seed)

    @tree.command(name="zoomout", description="Zoom out of one of your images: the picture goes on around it")
    @app_commands.guild_only()
    @app_commands.describe(
        image="One of imagine-bot's images",
        factor="How far (default 2×)",
        n="How many images (1-4)",
        seed="Seed for a repeatable result",
    )
    @app_commands.choices(
        factor=[app_commands.Choice(name="1.5×", value=1.5), app_commands.Choice(name="2×", value=2.0)]
    )
    async def zoomout(
        interaction: discord.Interaction,
        image: Image,
        factor: float | None = None,
        n: Images | None = None,
        seed: Seed | None = None,
    ) -> None:
        await handler.edit(interaction, image, op="zoomout", factor=factor or 2.0, n=n, seed=seed)

    @tree.command(name="pan", description="Pan one of your images: the picture goes on that way")
    @app_commands.guild_only()
    @app_commands.describe(
        image="One of imagine-bot's images",
        direction="Which way",
        n="How many images (1-4)",
        seed="Seed for a repeatable result",
    )
    @app_commands.choices(direction=[app_commands.Choice(name=d, value=d) for d in ("left", "right", "up", "down")])
    async def pan(
        interaction: discord.Interaction,
        image: Image,
        direction: str,
        n: Images | None = None,
        seed: Seed | None = None,
    ) -> None:
        await handler.edit(interaction, image, op="pan", direction=direction, n=n, seed=seed)

    @tree.command(name="upscale", description="One image of a grid, larger (one image of quota)")
    @app_commands.guild_only()
    @app_commands.describe(image="One of imagine-bot's images: 12:3, last:2, or a link to its message")
    async def upscale(interaction: discord.Interaction, image: Image) -> None:
        await handler.upscale(interaction, image)

    @tree.command(name="reroll", description="The same request again with a new seed")
    @app_commands.guild_only()
    @app_commands.describe(job="A job number (your latest when empty)")
    async def reroll(
        interaction: discord.Interaction, job: app_commands.Range[int, 1, limits.MAX_ID] | None = None
    ) -> None:
        await handler.job_command(interaction, c.Reroll(job))

    @tree.command(name="cancel", description="Cancel a queued or running job (refunded)")
    @app_commands.guild_only()
    @app_commands.describe(job="A job number (your latest when empty)")
    async def cancel(
        interaction: discord.Interaction, job: app_commands.Range[int, 1, limits.MAX_ID] | None = None
    ) -> None:
        await handler.run(interaction, c.Cancel(job), ephemeral=True)

    @tree.command(name="gallery", description="A private link to this server's gallery")
    @app_commands.guild_only()
    async def gallery(interaction: discord.Interaction) -> None:
        await handler.run(interaction, c.Gallery(), ephemeral=True)

    @tree.command(name="help", description="What imagine-bot can do")
    @app_commands.guild_only()
    async def help_(interaction: discord.Interaction) -> None:
        await handler.run(interaction, c.Help(), ephemeral=True)

    @tree.context_menu(name="Vary")
    @app_commands.guild_only()
    async def vary_message(interaction: discord.Interaction, message: discord.Message) -> None:
        await handler.vary_message(interaction, message)

    tree.add_command(AdminCommands(handler))


#: How each command reaches the service from Discord (tests/bot/test_reachability.py checks
#: every Command type is here or in ABSENT, and that each named slash command is registered).
REACHES: dict[type, str] = {
    c.Imagine: "/imagine",
    c.Vary: "/vary",
    c.Blend: "/blend",
    c.Edit: "/edit",
    c.Upscale: "/upscale",
    c.Reroll: "/reroll",
    c.Cancel: "/cancel",
    c.History: "/history",
    c.Thread: "/thread",
    c.Quota: "/quota",
    c.Help: "/help",
    c.Gallery: "/gallery",
    c.AdminQuota: "/imagine-admin quota",
    c.AdminBan: "/imagine-admin ban",
    c.AdminUnban: "/imagine-admin unban",
    c.AdminBlockTerm: "/imagine-admin block-term",
    c.AdminUnblockTerm: "/imagine-admin unblock-term",
    c.AdminAudit: "/imagine-admin audit",
    c.AdminStats: "/imagine-admin stats",
    c.AdminRetention: "/imagine-admin retention",
    c.AdminModRole: "/imagine-admin mod-role",
}
ABSENT: dict[type, str] = {}


class AdminCommands(app_commands.Group):
    """`/imagine-admin …`: quotas, bans, blocked terms, audit, stats, retention, moderator roles.
    Each builds its typed command; the service checks moderator rights on every call."""

    quota = app_commands.Group(name="quota", description="Daily image quotas")

    def __init__(self, handler: InteractionHandler) -> None:
        super().__init__(
            name="imagine-admin",
            description="imagine-bot moderation: quotas, bans, blocked terms, audit, stats",
            # guild_only sets dm_permission false: with contexts alone the group said "DMs allowed".
            guild_only=True,
            allowed_contexts=app_commands.AppCommandContext(guild=True),
            default_permissions=discord.Permissions(manage_guild=True),
        )
        self.handler = handler

    @quota.command(name="set", description="Set a daily image limit")
    @app_commands.describe(target=TARGET_HELP, images="Images per day", unlimited="No limit at all")
    async def quota_set(
        self,
        interaction: discord.Interaction,
        target: Target | None = None,
        images: app_commands.Range[int, 0, limits.MAX_QUOTA_IMAGES] | None = None,
        unlimited: bool = False,
    ) -> None:
        if unlimited == (images is not None):
            await self.handler.refuse(interaction, "Give either a number of images or unlimited: True.")
            return
        await self.handler.admin(interaction, c.AdminQuota("set", quota_target(target), None if unlimited else images))

    @quota.command(name="grant", description="Give extra images for today")
    @app_commands.describe(target=TARGET_HELP, images="Extra images for today")
    async def quota_grant(
        self,
        interaction: discord.Interaction,
        images: app_commands.Range[int, 1, limits.MAX_QUOTA_IMAGES],
        target: Target | None = None,
    ) -> None:
        await self.handler.admin(interaction, c.AdminQuota("grant", quota_target(target), images))

    @quota.command(name="reset", description="Start today's usage over")
    @app_commands.describe(target=TARGET_HELP)
    async def quota_reset(self, interaction: discord.Interaction, target: Target | None = None) -> None:
        await self.handler.admin(interaction, c.AdminQuota("reset", quota_target(target)))

    @app_commands.command(name="ban", description="Stop a member from using imagine-bot here")
    @app_commands.describe(user="Who", reason="Why (they are told)")
    async def ban(
        self,
        interaction: discord.Interaction,
        user: discord.User,
        reason: app_commands.Range[str, 1, limits.MAX_BAN_REASON_CHARS] | None = None,
    ) -> None:
        await self.handler.admin(interaction, c.AdminBan(str(user.id), reason))

    @app_commands.command(name="unban", description="Let a banned member use imagine-bot again")
    async def unban(self, interaction: discord.Interaction, user: discord.User) -> None:
        await self.handler.admin(interaction, c.AdminUnban(str(user.id)))

    @app_commands.command(name="block-term", description="Refuse prompts containing a word or phrase")
    async def block_term(self, interaction: discord.Interaction, term: str) -> None:
        await self.handler.admin(interaction, c.AdminBlockTerm(term))

    @app_commands.command(name="unblock-term", description="Stop refusing a blocked word or phrase")
    async def unblock_term(self, interaction: discord.Interaction, term: str) -> None:
        await self.handler.admin(interaction, c.AdminUnblockTerm(term))

    @app_commands.command(name="audit", description="Recent moderator actions")
    @app_commands.describe(entries="How many (1-100)")
    async def audit(
        self,
        interaction: discord.Interaction,
        entries: app_commands.Range[int, *limits.AUDIT_ENTRIES] | None = None,
    ) -> None:
        await self.handler.admin(interaction, c.AdminAudit(entries) if entries is not None else c.AdminAudit())

    @app_commands.command(name="stats", description="Jobs, failures and usage by member and role")
    @app_commands.describe(days="Over how many days (1-90)")
    async def stats(
        self,
        interaction: discord.Interaction,
        days: app_commands.Range[int, *limits.STATS_DAYS] | None = None,
    ) -> None:
        await self.handler.admin(interaction, c.AdminStats(days) if days is not None else c.AdminStats())

    @app_commands.command(name="retention", description="How long this server's jobs and images are kept")
    @app_commands.describe(days="Days to keep them", keep="Or: forever, or the deployment's default")
    @app_commands.choices(
        keep=[
            app_commands.Choice(name="forever", value="forever"),
            app_commands.Choice(name="default", value="default"),
        ]
    )
    async def retention(
        self,
        interaction: discord.Interaction,
        days: app_commands.Range[int, 1, limits.RETENTION_DAYS[1]] | None = None,
        keep: str | None = None,
    ) -> None:
        if (days is None) == (keep is None):
            await self.handler.refuse(interaction, "Give either a number of days or keep: forever/default.")
            return
        await self.handler.admin(
            interaction, c.AdminRetention(days if days is not None else (0 if keep == "forever" else None))
        )

    @app_commands.command(name="mod-role", description="Make a role's members imagine-bot moderators (or stop)")
    @app_commands.choices(
        action=[app_commands.Choice(name="add", value="add"), app_commands.Choice(name="remove", value="remove")]
    )
    async def mod_role(self, interaction: discord.Interaction, action: str, role: discord.Role) -> None:
        await self.handler.admin(interaction, c.AdminModRole(str(role.id), action == "add"))
