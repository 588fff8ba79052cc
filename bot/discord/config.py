"""IMAGINE_DISCORD_*: the bot token and how the Discord front-end behaves.

Built lazily (`get_discord_settings()`), never at import time; every variable is documented in
README.md, section Discord.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class DiscordSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMAGINE_DISCORD_", env_file=None, extra="ignore")

    token: SecretStr = SecretStr("")
    # Register the slash commands at start-up: in these guilds (comma-separated ids: the commands
    # appear at once) or, when empty, globally (Discord may take up to an hour to show them).
    sync_commands: bool = True
    guild_ids: str = ""
    # React 🔁 / 1️⃣–4️⃣ on the copies ✉️ sends to DMs (adds the DM reactions intent).
    dm_reactions: bool = False
    # Discord allows about 5 edits of a message per 5 s; one progress edit per job every 2 s stays
    # well inside that while many jobs run.
    progress_interval_s: float = 2.0
    # How often to look for finished jobs when no wake-up arrives (Redis pub/sub wakes at once).
    sweep_interval_s: float = 5.0
    # A delivery that failed (Discord down, 429 without Via) is retried after this many seconds.
    delivery_lease_s: float = 30.0
    # How long a reaction's error notice ("you have no quota left") stays in the channel.
    notice_ttl_s: float = 60.0
    # Commands worked on at once after being acknowledged; a burst beyond this waits its turn,
    # so acknowledging new interactions within Discord's 3 s never has to wait for it.
    max_concurrent_commands: int = 8

    @property
    def sync_guild_ids(self) -> list[int]:
        return [int(part) for part in self.guild_ids.replace(" ", "").split(",") if part]


@lru_cache(maxsize=1)
def get_discord_settings() -> DiscordSettings:
    """Read the Discord settings from the environment once per process."""
    return DiscordSettings()
