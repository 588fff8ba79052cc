"""The client as Discord sees it: intents at IDENTIFY, the commands it registers, and
`imagine-bot discord` starting from environment variables alone."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import pytest

from bot.discord.config import DiscordSettings, get_discord_settings
from bot.runtime import build_bot_runtime
from engine.config import get_settings
from tests.bot.discord.conftest import (
    GUILD_ID,
    ThreadWorker,
    discord_settings,
    running_bot,
    start_client,
    stop_client,
)
from tests.fakes.discord_model import APPLICATION_ID

GUILDS = 1 << 0
GUILD_MESSAGE_REACTIONS = 1 << 10
DIRECT_MESSAGE_REACTIONS = 1 << 13
MESSAGE_CONTENT = 1 << 15


async def test_identify_asks_for_guilds_and_reactions_only(harness):
    """IDENTIFY carries guilds + guild reactions: no message content, no members, no DMs."""
    identify = harness.fake.identifies[-1]
    assert identify["intents"] == GUILDS | GUILD_MESSAGE_REACTIONS
    assert identify["token"] == "fake-token"


async def test_dm_reactions_add_only_their_intent(fake, gpu, settings):
    """With IMAGINE_DISCORD_DM_REACTIONS the DM reactions intent is added, and nothing else."""
    async with running_bot(fake, gpu, settings, discord_settings(dm_reactions=True)):
        intents = fake.identifies[-1]["intents"]
    assert intents == GUILDS | GUILD_MESSAGE_REACTIONS | DIRECT_MESSAGE_REACTIONS
    assert not intents & MESSAGE_CONTENT


async def test_commands_are_registered_globally_with_admin_hidden_by_default(harness):
    """Start-up syncs every command; /imagine-admin defaults to Manage Server, all are guild-only."""
    put = harness.fake.received("PUT", rf"/applications/{APPLICATION_ID}/commands")[-1]
    commands = {c["name"]: c for c in put.json}
    assert set(commands) == {
        "imagine",
        "vary",
        "blend",
        "edit",
        "zoomout",
        "pan",
        "upscale",
        "reroll",
        "cancel",
        "history",
        "thread",
        "quota",
        "gallery",
        "help",
        "imagine-admin",
        "Vary",
    }
    assert commands["Vary"]["type"] == 3  # a message context menu (Apps → Vary)
    assert all(commands[name]["type"] == 1 for name in commands if name != "Vary")
    vary_image = next(o for o in commands["vary"]["options"] if o["name"] == "image")
    assert vary_image["type"] == 3 and vary_image["autocomplete"] is True  # the ImageOption transformer
    assert int(commands["imagine-admin"]["default_member_permissions"]) == 1 << 5
    assert all(c["contexts"] == [0] for c in commands.values())
    imagine = {o["name"]: o for o in commands["imagine"]["options"]}
    assert list(imagine) == ["prompt", "negative", "seed", "n", "aspect", "steps", "guidance", "prior"]
    assert imagine["prompt"]["required"] and not imagine["n"]["required"]
    assert [c["value"] for c in imagine["aspect"]["choices"]][:2] == ["1:1", "4:3"]
    admin = {o["name"] for o in commands["imagine-admin"]["options"]}
    assert admin == {"quota", "ban", "unban", "block-term", "unblock-term", "audit", "stats", "retention", "mod-role"}


async def test_guild_sync_and_a_model_option_where_several_models_exist(fake, gpu, settings):
    """With IMAGINE_DISCORD_GUILD_IDS the commands go to that guild (no global sync); with
    several models configured /imagine offers `model`, with autocomplete."""
    worker = ThreadWorker(settings, gpu)
    runtime = build_bot_runtime(settings, queue=worker)
    runtime.service.policy = dataclasses.replace(runtime.service.policy, available_models=("builtin", "karlo"))
    client = await start_client(fake, runtime, discord_settings(guild_ids=f"{GUILD_ID}"))
    try:
        put = fake.received("PUT", rf"/applications/{APPLICATION_ID}/guilds/{GUILD_ID}/commands")[-1]
        imagine = next(c for c in put.json if c["name"] == "imagine")
        model = next(o for o in imagine["options"] if o["name"] == "model")
        assert model["autocomplete"] is True
        assert fake.received("PUT", rf"/applications/{APPLICATION_ID}/commands") == []
    finally:
        await stop_client(client)
        await runtime.close()
        worker.close()


def test_settings_come_from_imagine_discord_variables(monkeypatch):
    """Every IMAGINE_DISCORD_* variable is read, and the token stays secret in reprs."""
    monkeypatch.setenv("IMAGINE_DISCORD_TOKEN", "s3cret")
    monkeypatch.setenv("IMAGINE_DISCORD_GUILD_IDS", "1, 2")
    monkeypatch.setenv("IMAGINE_DISCORD_DM_REACTIONS", "true")
    monkeypatch.setenv("IMAGINE_DISCORD_PROGRESS_INTERVAL_S", "3")
    settings = DiscordSettings()
    assert settings.token.get_secret_value() == "s3cret" and "s3cret" not in repr(settings)
    assert settings.sync_guild_ids == [1, 2]
    assert settings.dm_reactions and settings.progress_interval_s == 3.0


def test_without_a_token_the_command_says_what_to_set(monkeypatch, capsys):
    """`imagine-bot discord` with no IMAGINE_DISCORD_TOKEN exits 2 and says which variable."""
    from bot.cli import main

    monkeypatch.delenv("IMAGINE_DISCORD_TOKEN", raising=False)
    get_discord_settings.cache_clear()
    assert main(["discord"]) == 2
    assert "IMAGINE_DISCORD_TOKEN" in capsys.readouterr().err


@pytest.mark.slow
async def test_imagine_bot_discord_runs_from_the_environment(fake, monkeypatch, tmp_path, capsys):
    """`imagine-bot discord` with only environment variables: migrates the embedded database,
    starts its worker and its /healthz + /readyz endpoints, logs in with the token, syncs the
    commands and connects to the gateway; a token Discord refuses (close code 4004) ends it
    with exit code 1 and a clear message."""
    import socket
    import urllib.request

    from bot.cli import main

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        ops_port = probe.getsockname()[1]
    monkeypatch.setenv("IMAGINE_OPS_HOST", "127.0.0.1")
    monkeypatch.setenv("IMAGINE_OPS_PORT", str(ops_port))
    monkeypatch.setenv("IMAGINE_DISCORD_TOKEN", "env-token")
    monkeypatch.setenv("IMAGINE_DATA_DIR", str(tmp_path / "data"))
    for name in ("IMAGINE_DB_URL", "IMAGINE_BROKER_URL", "IMAGINE_DISCORD_GUILD_IDS"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    get_discord_settings.cache_clear()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(main(["discord"])), daemon=True)
    thread.start()
    try:
        identify = await fake.wait_identified(timeout=60)
        assert identify["token"] == "env-token"
        assert fake.received("PUT", rf"/applications/{APPLICATION_ID}/commands")
        assert fake.received("GET", "/users/@me")[0].headers["Authorization"] == "Bot env-token"
        for path in ("/healthz", "/readyz"):
            with await asyncio.to_thread(
                urllib.request.urlopen, f"http://127.0.0.1:{ops_port}{path}", None, 10
            ) as answer:
                assert answer.status == 200, path
        await fake.close_gateway(code=4004)
        await asyncio.to_thread(thread.join, 60)
    finally:
        get_settings.cache_clear()
        get_discord_settings.cache_clear()
    assert result == [1]
    assert (tmp_path / "data" / "imagine.db").exists()
    assert "Discord closed the connection (4004)" in capsys.readouterr().err
