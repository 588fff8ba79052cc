"""IMAGINE_DISCORD_*: the bot token and how the Discord front-end behaves.

Built lazily (`get_discord_settings()`), never at import time; every variable is documented in
docs/discord.md.
"""

from __future__ import annotations

import re
import socket
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
    # Sharding (discord.py's AutoShardedClient). SHARD_COUNT: how many shards in all (0: what
    # Discord recommends, from /gateway/bot). This process runs SHARD_IDS (comma-separated), or,
    # with REPLICAS set, the shards i with i % REPLICAS == its ordinal — the number ending the
    # host name, as a Kubernetes StatefulSet names pods (imagine-discord-2 → 2), or ORDINAL.
    # Empty: every shard. Several processes need SHARD_COUNT set (they must agree on it).
    shard_count: int = 0
    shard_ids: str = ""
    replicas: int = 0
    ordinal: int | None = None
    # Only for tests and fakes: where the REST API and the gateway are.
    api_url: str = ""
    gateway_url: str = ""

    @property
    def sync_guild_ids(self) -> list[int]:
        return [int(part) for part in self.guild_ids.replace(" ", "").split(",") if part]

    def my_shard_ids(self, hostname: str | None = None) -> list[int] | None:
        """The shards this process runs; None: all of them (discord.py decides how many)."""
        if self.shard_ids.strip():
            ids = [int(part) for part in self.shard_ids.replace(" ", "").split(",") if part]
            if self.shard_count and any(not 0 <= i < self.shard_count for i in ids):
                raise ValueError(f"IMAGINE_DISCORD_SHARD_IDS {ids} are not all below SHARD_COUNT {self.shard_count}")
            return ids
        if self.replicas > 1:
            if not self.shard_count:
                raise ValueError("IMAGINE_DISCORD_REPLICAS needs IMAGINE_DISCORD_SHARD_COUNT (all replicas must agree)")
            ordinal = self.ordinal if self.ordinal is not None else ordinal_of(hostname or socket.gethostname())
            if not 0 <= ordinal < self.replicas:
                raise ValueError(f"replica ordinal {ordinal} is not below IMAGINE_DISCORD_REPLICAS {self.replicas}")
            return [i for i in range(self.shard_count) if i % self.replicas == ordinal]
        return None


def ordinal_of(hostname: str) -> int:
    """The ordinal a StatefulSet puts at the end of a pod's name (`imagine-discord-2` → 2)."""
    match = re.search(r"-([0-9]+)$", hostname)
    if match is None:
        raise ValueError(
            f"cannot read a replica ordinal from the host name {hostname!r}; "
            "set IMAGINE_DISCORD_ORDINAL or IMAGINE_DISCORD_SHARD_IDS"
        )
    return int(match.group(1))


@lru_cache(maxsize=1)
def get_discord_settings() -> DiscordSettings:
    """Read the Discord settings from the environment once per process."""
    return DiscordSettings()
