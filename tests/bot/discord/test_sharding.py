"""Sharding across processes: two `imagine-bot discord` processes with two shards each of four,
against the fake Discord (which routes each guild's events to shard `(guild_id >> 22) % 4`),
a separate worker process and one database — the shape of a StatefulSet of Discord bots."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.discord.config import DiscordSettings, ordinal_of
from tests.conftest import require
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord_model import FakeGuild, FakeUser, option, shard_of

SHARDS = 4
#: One guild on each shard: (k << 22) with k ≡ shard (mod 4).
GUILDS = [
    FakeGuild((1_000_000_000 + k) << 22, f"guild-{k}", owner_id=1, channel_id=((1_000_000_000 + k) << 22) + 1)
    for k in range(SHARDS)
]
USERS = [FakeUser(800000000000000100 + k, f"user{k}") for k in range(SHARDS)]


def test_shard_ids_of_a_statefulset_replica():
    """A replica runs the shards i with i % replicas == its ordinal (from its host name)."""
    settings = DiscordSettings(shard_count=8, replicas=3)
    assert settings.my_shard_ids("imagine-discord-0") == [0, 3, 6]
    assert settings.my_shard_ids("imagine-discord-2") == [2, 5]
    assert DiscordSettings(shard_ids="1, 3").my_shard_ids() == [1, 3]
    assert DiscordSettings().my_shard_ids() is None
    assert ordinal_of("imagine-discord-12") == 12
    with pytest.raises(ValueError, match="SHARD_COUNT"):
        DiscordSettings(replicas=2).my_shard_ids("imagine-discord-0")
    with pytest.raises(ValueError, match="below"):
        DiscordSettings(shard_count=2, shard_ids="2").my_shard_ids()


async def test_an_unsharded_client_past_the_guild_limit_is_closed_with_4011():
    """The fake says "Sharding required." (4011) to an unsharded IDENTIFY past its guild limit."""
    import aiohttp

    fake = await FakeDiscord(GUILDS, guild_limit=2).start()
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(f"ws://127.0.0.1:{fake.port}/") as ws:
            await ws.receive_json()  # HELLO
            await ws.send_json({"op": 2, "d": {"token": "fake", "intents": 0, "properties": {}}})
            closed = await ws.receive()
            assert ws.close_code == 4011 or getattr(closed, "data", None) == 4011
    finally:
        await fake.stop()


class Processes:
    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.started: list[subprocess.Popen] = []

    def start(self, name: str, args: list[str], **extra: str) -> subprocess.Popen:
        log = (self.tmp_path / f"{name}.log").open("a")
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", *args], env={**self.env, **extra}, stdout=subprocess.DEVNULL, stderr=log
        )
        self.started.append(process)
        return process

    def stop(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def jobs_by_prompt(db_file: Path) -> dict[str, int]:
    with sqlite3.connect(db_file) as connection:
        rows = connection.execute("SELECT prompt, count(*) FROM generations GROUP BY prompt").fetchall()
    return dict(rows)


async def until(check, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@pytest.mark.slow
@pytest.mark.redis
async def test_two_processes_two_shards_each_handle_every_guild_once(tmp_path, sqlite_template, private_redis):
    """Commands and reactions from guilds on every shard are each handled exactly once, by the
    process running that shard; with one process killed, its guilds' commands wait for it while
    the other's keep working, and after its restart nothing is lost or doubled."""
    require("redis")
    fake = await FakeDiscord(GUILDS, shard_count=SHARDS).start()
    data = tmp_path / "data"
    data.mkdir()
    db_file = data / "imagine.db"
    shutil.copyfile(sqlite_template, db_file)
    env = {
        **os.environ,
        "IMAGINE_DATA_DIR": str(data),
        "IMAGINE_DB_URL": f"sqlite:///{db_file}",
        "IMAGINE_DB_AUTO_MIGRATE": "false",
        "IMAGINE_BROKER_URL": private_redis,
        "IMAGINE_RENDER_BACKEND": "noop",
        "IMAGINE_OPS_PORT": "0",
        "IMAGINE_DISCORD_TOKEN": "fake-token",
        "IMAGINE_DISCORD_API_URL": f"http://127.0.0.1:{fake.port}/api/v10",
        "IMAGINE_DISCORD_GATEWAY_URL": f"ws://127.0.0.1:{fake.port}/",
        "IMAGINE_DISCORD_SHARD_COUNT": str(SHARDS),
        "IMAGINE_DISCORD_SWEEP_INTERVAL_S": "0.5",
    }
    processes = Processes(tmp_path, env)
    try:
        processes.start("worker", ["worker", "--pool", "solo"])
        first = processes.start("discord-0", ["discord"], IMAGINE_DISCORD_SHARD_IDS="0,1")
        processes.start("discord-1", ["discord"], IMAGINE_DISCORD_SHARD_IDS="2,3")
        await until(lambda: fake.shards_connected() == {0, 1, 2, 3}, what="four shards to identify")
        assert sorted((s, n) for s, n, _ in fake.identified_shards) == [(k, SHARDS) for k in range(SHARDS)]

        async def imagine(round_: str, k: int) -> dict:
            payload = fake.slash_command(
                "imagine", [option("prompt", f"{round_} {k}"), option("n", 2)], user=USERS[k], guild=GUILDS[k]
            )
            await fake.dispatch("INTERACTION_CREATE", payload)
            return payload

        def handled(payload: dict) -> int:
            return len(fake.received("POST", rf"/interactions/{payload['id']}/{payload['token']}/callback"))

        def grid_of(payload: dict) -> bool:
            message = fake.original(payload["token"])
            return bool(message and message.get("attachments"))

        # 1. Every guild, every shard: handled once, delivered.
        first_round = [await imagine("one", k) for k in range(SHARDS)]
        await until(lambda: all(grid_of(p) for p in first_round), what="four grids")
        assert [handled(p) for p in first_round] == [1] * SHARDS

        # Reactions (2️⃣ on each grid) reach the shard of their guild: one variation each.
        for k, payload in enumerate(first_round):
            grid = fake.original(payload["token"])
            await fake.dispatch(
                "MESSAGE_REACTION_ADD", fake.reaction(int(grid["id"]), "2\ufe0f\u20e3", user=USERS[k], guild=GUILDS[k])
            )
        await until(
            lambda: (
                len([p for p in jobs_by_prompt(db_file) if p.startswith("one")]) == SHARDS
                and sum(jobs_by_prompt(db_file).values()) == 2 * SHARDS
            ),
            what="four variations",
        )

        # 2. One process killed: its shards' guilds wait, the other's keep working.
        first.kill()
        first.wait()
        await until(lambda: fake.shards_connected() == {2, 3}, what="shards 0 and 1 to drop")
        second_round = [await imagine("two", k) for k in range(SHARDS)]
        await until(lambda: all(grid_of(p) for p in second_round[2:]), what="shards 2 and 3's grids")
        assert [handled(p) for p in second_round] == [0, 0, 1, 1]

        # 3. It comes back (a StatefulSet restarts it): the waiting commands are handled, once.
        processes.start("discord-0-again", ["discord"], IMAGINE_DISCORD_SHARD_IDS="0,1")
        await until(lambda: all(grid_of(p) for p in second_round), what="shards 0 and 1's grids")
        assert [handled(p) for p in second_round] == [1] * SHARDS
        counts = jobs_by_prompt(db_file)
        assert {f"two {k}": 1 for k in range(SHARDS)}.items() <= counts.items()
        assert all(count == 2 for prompt, count in counts.items() if prompt.startswith("one"))  # grid + variation
        assert sum(counts.values()) == 3 * SHARDS
        assert {shard_of(g.id, SHARDS) for g in GUILDS} == {0, 1, 2, 3}
    finally:
        processes.stop()
        await fake.stop()


@pytest.mark.slow
@pytest.mark.parametrize(("max_concurrency", "apart"), [(1, (5.0, 9.0)), (2, (0.0, 2.0))])
async def test_identify_concurrency_is_respected(tmp_path, sqlite_template, monkeypatch, max_concurrency, apart):
    """Two shards in one bucket (max_concurrency 1) identify 5 s apart; in two buckets, at once."""
    from bot.runtime import build_bot_runtime
    from tests.bot.discord.conftest import (
        FakeGpu,
        ThreadWorker,
        discord_settings,
        make_settings,
        start_client,
        stop_client,
    )

    fake = await FakeDiscord(GUILDS, shard_count=2, max_concurrency=max_concurrency).start()
    fake.install(monkeypatch)
    settings = make_settings(tmp_path, sqlite_template)
    worker = ThreadWorker(settings, FakeGpu())
    runtime = build_bot_runtime(settings, queue=worker)
    client = await start_client(fake, runtime, discord_settings(shard_count=2))
    try:
        await until(lambda: len(fake.identified_shards) == 2, timeout=20, what="two identifies")
        (_, _, first), (_, _, second) = fake.identified_shards
        assert apart[0] <= second - first < apart[1]
    finally:
        await stop_client(client)
        await asyncio.to_thread(worker.close)
        await runtime.close()
        await fake.stop()
