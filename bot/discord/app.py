"""`imagine-bot discord`: run the Discord bot from environment configuration.

IMAGINE_DISCORD_TOKEN is the bot token; everything else (database, broker, model, quotas) is the
shared IMAGINE_* configuration. With the embedded broker (no IMAGINE_BROKER_URL) a render worker
runs inside this process too, so one command is a whole working bot.
"""

from __future__ import annotations

import asyncio
import logging
import sys

log = logging.getLogger(__name__)


def point_at(api_url: str, gateway_url: str) -> None:
    """Use another REST API and gateway than Discord's (a fake, in tests and benchmarks)."""
    import yarl
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    if api_url:
        Route.BASE = api_url.rstrip("/")
    if gateway_url:
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


def main() -> int:
    """Run the bot until it is stopped; returns the process exit code."""
    import discord

    from bot.discord.client import ImagineClient
    from bot.discord.config import get_discord_settings
    from bot.runtime import build_bot_runtime
    from engine.config import get_settings

    discord_settings = get_discord_settings()
    try:
        discord_settings.my_shard_ids()
    except ValueError as error:
        print(f"imagine-bot discord: {error}", file=sys.stderr)
        return 2
    if discord_settings.api_url or discord_settings.gateway_url:
        point_at(discord_settings.api_url, discord_settings.gateway_url)
    token = discord_settings.token.get_secret_value()
    if not token:
        print("imagine-bot discord: set IMAGINE_DISCORD_TOKEN to the bot token (see docs/discord.md)", file=sys.stderr)
        return 2
    runtime = build_bot_runtime(get_settings())
    runtime.start_ops()
    worker = runtime.start_embedded_worker()

    async def run() -> None:
        client = ImagineClient(runtime, discord_settings)
        try:
            async with client:
                await client.start(token)
        finally:
            await runtime.close()

    try:
        asyncio.run(run())
    except discord.LoginFailure:
        print("imagine-bot discord: Discord refused the token (IMAGINE_DISCORD_TOKEN)", file=sys.stderr)
        return 1
    except discord.PrivilegedIntentsRequired as error:  # not asked for; kept for a clear message
        print(f"imagine-bot discord: {error}", file=sys.stderr)
        return 1
    except discord.ConnectionClosed as error:
        # 4004: the token was refused; 4013/4014: intents the application may not use.
        print(
            f"imagine-bot discord: Discord closed the connection ({error.code}): {error.reason or ''}", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        if worker is not None:
            worker.stop()
    return 0
