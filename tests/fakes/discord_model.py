"""Discord's objects as the fake Discord holds and sends them: ids (snowflakes), users and guild
members, guilds with their one text channel, command options — in the JSON shapes of Discord's
API reference (discord/discord-api-spec, `specs/openapi.json`; the gateway's in Discord's
developer documentation). Tests build their cast from these (`FakeGuild`, `FakeUser`) and their
commands' options (`option`, `subcommand`).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

API_PREFIX = "/api/v10"  # the REST API version discord.py 2.x speaks
DISCORD_EPOCH_MS = 1420070400000
APPLICATION_ID = 1100000000000000001
BOT_USER_ID = 1100000000000000002
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024

MANAGE_GUILD = 1 << 5
ADMINISTRATOR = 1 << 3
BASIC_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 6)  # view channel, send messages, add reactions

_counter = itertools.count(1)


def snowflake(at: float | None = None) -> int:
    """A Discord id whose timestamp is `at` (seconds since the Unix epoch; now by default)."""
    ms = int((time.time() if at is None else at) * 1000) - DISCORD_EPOCH_MS
    return (ms << 22) | (next(_counter) & 0x3FFFFF)


def iso_now() -> str:
    return datetime.now(UTC).isoformat()


def user_payload(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name,
        "global_name": name,
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
    }


@dataclass
class FakeUser:
    """A guild member: interactions carry their permissions computed, reactions only the roles."""

    id: int
    name: str
    roles: tuple[int, ...] = ()
    permissions: int = BASIC_PERMISSIONS

    def payload(self) -> dict[str, Any]:
        return user_payload(self.id, self.name)

    def member(self) -> dict[str, Any]:
        return {
            "user": self.payload(),
            "roles": [str(r) for r in self.roles],
            "nick": None,
            "avatar": None,
            "joined_at": iso_now(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "permissions": str(self.permissions),
        }


@dataclass
class FakeGuild:
    """A guild with one text channel, as the gateway's GUILD_CREATE describes it."""

    id: int
    name: str
    owner_id: int
    channel_id: int  # its one text channel
    roles: dict[int, tuple[str, int]] = field(default_factory=dict)  # id → (name, permissions)

    def role_payloads(self) -> list[dict[str, Any]]:
        everyone = {self.id: ("@everyone", BASIC_PERMISSIONS)}
        return [
            {
                "id": str(rid),
                "name": name,
                "permissions": str(perms),
                "position": i,
                "color": 0,
                "hoist": False,
                "managed": False,
                "mentionable": True,
                "flags": 0,
            }
            for i, (rid, (name, perms)) in enumerate({**everyone, **self.roles}.items())
        ]

    def channel_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.channel_id),
            "type": 0,
            "guild_id": str(self.id),
            "name": "general",
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
        }

    def create_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "owner_id": str(self.owner_id),
            "icon": None,
            "roles": self.role_payloads(),
            "channels": [self.channel_payload()],
            "threads": [],
            "members": [],
            "emojis": [],
            "stickers": [],
            "features": [],
            "member_count": 3,
            "large": False,
            "unavailable": False,
            "premium_tier": 0,
            "mfa_level": 0,
            "verification_level": 0,
            "explicit_content_filter": 0,
            "default_message_notifications": 0,
            "preferred_locale": "en-US",
            "system_channel_id": None,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "joined_at": iso_now(),
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }


def custom_ids(components: list[dict[str, Any]]) -> list[str]:
    """Every button's and menu's custom_id in a message's components, depth first."""
    found = []
    for component in components:
        if "custom_id" in component:
            found.append(component["custom_id"])
        found.extend(custom_ids(component.get("components") or []))
    return found


def shard_of(guild_id: int, num_shards: int) -> int:
    """The shard a guild's events go to (Discord's formula)."""
    return (guild_id >> 22) % num_shards


# --- option builders -----------------------------------------------------------------------

_OPTION_TYPES = {str: 3, int: 4, bool: 5, float: 10}


def option(name: str, value: Any, kind: int | None = None) -> dict[str, Any]:
    """One command option as Discord sends it (type from the value unless given)."""
    return {"name": name, "type": kind or _OPTION_TYPES[type(value)], "value": value}


def subcommand(name: str, options: list[dict[str, Any]] | None = None, *, group: bool = False) -> dict[str, Any]:
    return {"name": name, "type": 2 if group else 1, "options": options or []}
