"""Discord ingress: how fast the bot acknowledges and queues `/imagine`, with no model at all.

The real discord.py client runs against the fake Discord (REST + gateway on 127.0.0.1, from
tests/fakes/discord.py, in a process of its own, which also does the feeding and the
timing) on PostgreSQL + Redis, with a separate worker process using the no-op renderer
(IMAGINE_RENDER_BACKEND=noop), so render time is out of the picture and the delivery loop posts
every result while commands keep arriving. 1000 `/imagine` INTERACTION_CREATE payloads from 100
members are written to the gateway as fast as the bot accepts them: a new one whenever fewer
than `--window` (8) written ones are still waiting for their defer. `--rate R` writes R per second
instead, whether or not the bot keeps up (an open load: "at 200 commands/s").

    python bench/discord_ingress.py [--commands 1000] [--users 100] [--window 8 | --rate R] [--cpu]

Prints {"commands": N, "per_s": r, "p50_ms": a, "p99_ms": b}:
- p50_ms / p99_ms: defer latency, from writing a payload to the gateway to the fake receiving
  that interaction's defer callback;
- per_s: sustained commands per second, from the first payload written to the last command
  fully handled (its job queued and its "queued, position N" message shown).
`--cpu` adds "cpu_ms_per_command": the CPU time per command of every process taking part until
every result is delivered — the bot (its delivery loop included), the worker, PostgreSQL's
backends, Redis, the fake Discord (Linux: read from /proc) — and runs the **floor**: a bare
discord.py client against a fresh fake making the same Discord calls per command as imagine-bot
(the defer, the "queued" edit with its ❌, the final edit with the small PNG and the grid's
buttons), with no database, no queue and no worker. Its CPU per command is "floor_bot", and
"bot_over_floor" = bot / floor_bot: what imagine-bot itself costs beyond discord.py, as a ratio
measured in one run (machines of this kind differ 2.5× in absolute speed). "discord_calls" counts
the REST calls per command each side made, so the two are seen to do the same work. On 2 cores,
N commands/s needs the processes' sum to stay under 2000/N ms.

A whole burst written at once is not a useful load: the client reads every buffered frame before
it runs any handler, so each defer would wait for the whole burst to be parsed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scratch import percentile, scratch_postgres_redis  # noqa: E402  (bench/scratch.py)

from bot.discord.client import ImagineClient  # noqa: E402
from bot.discord.config import DiscordSettings  # noqa: E402
from bot.runtime import build_bot_runtime  # noqa: E402
from engine.config import Settings  # noqa: E402
from tests.fakes.discord import FakeDiscord  # noqa: E402
from tests.fakes.discord_model import FakeGuild, FakeUser, option  # noqa: E402

REDIS = os.environ.get("IMAGINE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")
GUILD = FakeGuild(700000000000000001, "bench", owner_id=1, channel_id=700000000000000002)


class RouteBase:
    """Point discord.py at the fake for the benchmark's lifetime (what monkeypatch does in tests)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def __enter__(self) -> None:
        import yarl
        from discord.gateway import DiscordWebSocket
        from discord.http import Route

        self.saved = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
        Route.BASE = f"http://127.0.0.1:{self.port}/api/v10"
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"ws://127.0.0.1:{self.port}/")

    def __exit__(self, *exc) -> None:
        from discord.gateway import DiscordWebSocket
        from discord.http import Route

        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = self.saved


# --- the fake Discord's process: serves the API and the gateway, feeds, times -------------------


async def serve_fake() -> None:
    """Run the fake Discord plus a control endpoint: POST /bench/feed feeds the commands and
    answers with the measurements once every command was handled."""
    from aiohttp import web

    fake = FakeDiscord([GUILD])

    async def feed(request: web.Request) -> web.Response:
        spec = await request.json()
        commands, users, rate, window = spec["commands"], spec["users"], spec["rate"], spec["window"]
        members = [FakeUser(600000000000000000 + i, f"member{i}") for i in range(users)]
        payloads = [
            fake.slash_command(
                "imagine", [option("prompt", f"bench {i}"), option("n", 1)], user=members[i % users], guild=GUILD
            )
            for i in range(commands)
        ]
        fed: dict[str, float] = {}
        mark = fake.mark()
        unacknowledged = asyncio.Semaphore(window)
        fake.on_request = lambda r: unacknowledged.release() if r.path.endswith("/callback") else None
        started = time.perf_counter()
        for i, payload in enumerate(payloads):
            if rate:  # paced: payload i is due at started + i / rate, whatever the bot does
                await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
            else:  # as fast as the bot accepts: at most `window` interactions not yet deferred
                await unacknowledged.acquire()
            fed[payload["token"]] = time.perf_counter()
            await fake.dispatch("INTERACTION_CREATE", payload)

        def handled() -> list:
            return fake.received(
                "PATCH", r"/webhooks/\d+/[^/]+/messages/@original", lambda r: "queued" in (r.content or "")
            )

        def delivered() -> list:
            return fake.received("PATCH", r"/webhooks/\d+/[^/]+/messages/@original", lambda r: bool(r.files))

        await fake.wait_until(lambda: len(handled()) >= commands, timeout=600)
        finished = max(r.at for r in handled())
        if spec.get("until_delivered"):  # CPU is counted to the last result, on both sides
            await fake.wait_until(lambda: len(delivered()) >= commands, timeout=600)
        defers = fake.received("POST", r"/interactions/\d+/[^/]+/callback", arrived=True)
        latencies = [(r.at - fed[r.path.split("/")[3]]) * 1000 for r in defers]
        assert len(latencies) == commands, f"{len(latencies)} defers for {commands} commands"
        # Calls per command: every REST request since the feed began (start-up calls excluded).
        calls = [r for r in fake.calls[mark:] if not r.path.startswith("/bench/")]
        return web.json_response(
            {
                "commands": commands,
                "per_s": round(commands / (finished - started), 1),
                "p50_ms": round(statistics.median(latencies), 2),
                "p99_ms": round(percentile(latencies, 0.99), 2),
                "discord_calls": round(len(calls) / commands, 2),
            }
        )

    await fake.start(extra_routes=[web.post("/bench/feed", feed)])
    print(json.dumps({"port": fake.port}), flush=True)
    await asyncio.Event().wait()  # until the benchmark terminates this process


# --- CPU accounting (--cpu) ---------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (Linux /proc; 0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _processes(database: str) -> dict[str, list[int]]:
    """PostgreSQL backends serving the benchmark's database, and the Redis server."""
    found: dict[str, list[int]] = {"postgres": [], "redis": []}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if command.startswith("postgres:") and f" {database} " in command:
            found["postgres"].append(int(entry.name))
        elif command.startswith("redis-server"):
            found["redis"].append(int(entry.name))
    return found


class CpuAccount:
    """CPU used by each process of the benchmark between start() and report()."""

    def __init__(self, pids: dict[str, int], database: str) -> None:
        self.pids = pids
        self.database = database

    def _read(self) -> dict[str, float]:
        totals = {name: _cpu_seconds(pid) for name, pid in self.pids.items()}
        for name, pids in _processes(self.database).items():
            totals[name] = sum(_cpu_seconds(pid) for pid in pids)
        totals["bot"] = time.process_time()
        return totals

    def start(self) -> None:
        self.before = self._read()

    def report(self, commands: int) -> dict[str, float]:
        after = self._read()
        return {name: round(1000 * (after[name] - self.before.get(name, 0.0)) / commands, 2) for name in after}


# --- the floor: discord.py alone ----------------------------------------------------------------


def floor_client():
    """A bare discord.py client making imagine-bot's Discord calls per `/imagine` — the defer,
    the "queued" edit with a ❌ button, the final edit with an 8×8 PNG (what the no-op renderer
    draws) and U1/V1/🔄 — at once, with no database, no queue and no worker."""
    import io

    import discord
    from discord import app_commands
    from PIL import Image

    from engine.images import encode_png

    png = encode_png(Image.new("RGB", (8, 8), (200, 40, 40)))

    def buttons(*custom_ids: str) -> discord.ui.View:
        view = discord.ui.View(timeout=None)
        for custom_id in custom_ids:
            view.add_item(discord.ui.Button(label=custom_id.split(":")[1].upper(), custom_id=custom_id))
        return view

    client = discord.Client(
        intents=discord.Intents(guilds=True, guild_reactions=True),
        max_messages=None,
        member_cache_flags=discord.MemberCacheFlags.none(),
        chunk_guilds_at_startup=False,
    )
    tree = app_commands.CommandTree(client)
    jobs = iter(range(1, 10**9))

    @tree.command(name="imagine", description="floor")
    async def imagine(interaction: discord.Interaction, prompt: str, n: int = 4) -> None:
        job = next(jobs)
        await interaction.response.defer(thinking=True)
        await interaction.edit_original_response(
            content=f'#{job} imagine "{prompt}": queued, position 1 in the queue.', view=buttons(f"imagine:x:{job}")
        )
        await interaction.edit_original_response(
            content=f'#{job} imagine "{prompt}": done.',
            attachments=[discord.File(io.BytesIO(png), f"imagine-{job}.png")],
            view=buttons(f"imagine:u:{job}:1", f"imagine:v:{job}:1", f"imagine:r:{job}"),
        )

    return client


async def measure_floor(commands: int, users: int, rate: float, window: int) -> dict:
    """The floor's run against a fresh fake: its JSON, with this process's CPU per command."""
    import aiohttp

    fake = subprocess.Popen([sys.executable, __file__, "--serve-fake"], stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(fake.stdout.readline())["port"]
        client = floor_client()
        with RouteBase(port):
            task = asyncio.create_task(client.start("floor"))
            try:
                await asyncio.wait_for(client.wait_until_ready(), 30)
                before = time.process_time()
                async with (
                    aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as session,
                    session.post(
                        f"http://127.0.0.1:{port}/bench/feed",
                        json={
                            "commands": commands,
                            "users": users,
                            "rate": rate,
                            "window": window,
                            "until_delivered": True,
                        },
                    ) as response,
                ):
                    result = await response.json()
                result["cpu_ms"] = 1000 * (time.process_time() - before) / commands
                return result
            finally:
                await client.close()
                await asyncio.gather(task, return_exceptions=True)
    finally:
        fake.terminate()
        fake.wait(timeout=30)


# --- the bot's process ------------------------------------------------------------------------


async def measure(
    settings: Settings, commands: int, users: int, rate: float, window: int, cpu: CpuAccount | None
) -> dict:
    import aiohttp

    fake = subprocess.Popen([sys.executable, __file__, "--serve-fake"], stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(fake.stdout.readline())["port"]
        runtime = build_bot_runtime(settings)
        bot_settings = DiscordSettings(token="bench", sync_commands=False, sweep_interval_s=1.0)
        client = ImagineClient(runtime, bot_settings, guild_ready_timeout=0.05)
        with RouteBase(port):
            task = asyncio.create_task(client.start("bench"))
            try:
                await asyncio.wait_for(client.wait_until_ready(), 30)
                timeout = aiohttp.ClientTimeout(total=900)
                if cpu is not None:
                    cpu.pids["fake"] = fake.pid
                    cpu.start()
                async with (
                    aiohttp.ClientSession(timeout=timeout) as session,
                    session.post(
                        f"http://127.0.0.1:{port}/bench/feed",
                        json={
                            "commands": commands,
                            "users": users,
                            "rate": rate,
                            "window": window,
                            "until_delivered": cpu is not None,
                        },
                    ) as response,
                ):
                    result = await response.json()
                if cpu is not None:
                    result["cpu_ms_per_command"] = cpu.report(commands)
                return result
            finally:
                await client.close()
                await asyncio.gather(task, return_exceptions=True)
                await runtime.close()
    finally:
        fake.terminate()
        fake.wait(timeout=30)


async def run(commands: int, users: int, rate: float = 0.0, window: int = 8, show_cpu: bool = False) -> dict:
    worker = None
    with scratch_postgres_redis(REDIS) as url, tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as folder:
        settings = Settings()
        settings.paths.data_dir = Path(folder)
        settings.database.url = url
        settings.database.auto_migrate = False
        settings.broker.url = REDIS
        settings.render.backend = "noop"
        settings.quota.default_daily_images = 10**6
        env = {
            **os.environ,
            "IMAGINE_DATA_DIR": folder,
            "IMAGINE_DB_URL": url,
            "IMAGINE_BROKER_URL": REDIS,
            "IMAGINE_RENDER_BACKEND": "noop",
        }
        try:
            worker = subprocess.Popen(
                [sys.executable, "-m", "bot", "worker", "--pool", "solo", "--loglevel", "WARNING"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            cpu = CpuAccount({"worker": worker.pid}, url.rsplit("/", 1)[1]) if show_cpu else None
            result = await measure(settings, commands, users, rate, window, cpu)
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait(timeout=30)
    if show_cpu:
        floor = await measure_floor(commands, users, rate, window)
        spent = result["cpu_ms_per_command"]
        spent["floor_bot"] = round(floor["cpu_ms"], 2)
        result["bot_over_floor"] = round(spent["bot"] / spent["floor_bot"], 2)
        result["discord_calls"] = {"bot": result["discord_calls"], "floor": floor["discord_calls"]}
        result["floor"] = {k: floor[k] for k in ("per_s", "p50_ms", "p99_ms")}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", type=int, default=1000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument(
        "--window", type=int, default=8, help="interactions written but not yet deferred, at most (as fast as accepted)"
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="instead, write this many per second whether or not the bot keeps up"
    )
    parser.add_argument("--cpu", action="store_true", help="also print each process's CPU per command to stderr")
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.serve_fake:
        asyncio.run(serve_fake())
        return 0
    print(json.dumps(asyncio.run(run(args.commands, args.users, args.rate, args.window, args.cpu))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
