"""Who is asking, in the service's terms: a Discord member becomes a neutral `Actor`.

The adapter only reports facts: the guild (the team), the member's role ids, and whether they
hold Manage Server (a platform admin). Whether that makes them a moderator, and what quota
their roles give, the service decides. The guild id is listed among the roles because it is
the id of @everyone, so a moderator can set a quota for `@everyone` like for any role.
"""

from __future__ import annotations

import discord

from engine.domain.errors import UsageError
from engine.domain.types import Actor, Platform


def _role_ids(member: discord.Member | None, guild_id: int) -> tuple[str, ...]:
    ids = [str(role.id) for role in member.roles] if member is not None else []
    if str(guild_id) not in ids:
        ids.insert(0, str(guild_id))
    return tuple(ids)


def _is_admin(permissions: discord.Permissions) -> bool:
    return permissions.manage_guild or permissions.administrator


def actor_from_interaction(interaction: discord.Interaction) -> Actor:
    """The member who ran a command or pressed a button."""
    if interaction.guild_id is None:
        raise UsageError("imagine-bot works in servers: use it in a server channel, not in DMs.")
    user = interaction.user
    member = user if isinstance(user, discord.Member) else None
    guild = interaction.guild
    return Actor(
        Platform.DISCORD,
        team_id=str(interaction.guild_id),
        user_id=str(user.id),
        user_name=user.display_name,
        team_name=guild.name if guild is not None and guild.name else "",
        role_ids=_role_ids(member, interaction.guild_id),
        # Computed by Discord for this member in this channel (administrators have every bit).
        is_platform_admin=_is_admin(interaction.permissions),
    )


def actor_from_reaction(payload: discord.RawReactionActionEvent, team_id: str) -> Actor:
    """The member who reacted; in a DM, the team is the one the reacted-to job belongs to."""
    member = payload.member
    if payload.guild_id is None or member is None:
        # A DM, or a guild not in the cache: no roles known, so no role-based rights either.
        return Actor(
            Platform.DISCORD,
            team_id=str(payload.guild_id or team_id),
            user_id=str(payload.user_id),
            role_ids=(str(payload.guild_id),) if payload.guild_id else (),
        )
    return Actor(
        Platform.DISCORD,
        team_id=str(payload.guild_id),
        user_id=str(payload.user_id),
        user_name=member.display_name,
        team_name=member.guild.name or "",
        role_ids=_role_ids(member, payload.guild_id),
        is_platform_admin=_is_admin(member.guild_permissions),
    )
