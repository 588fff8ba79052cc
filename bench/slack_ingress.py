"""Slack ingress: how fast `imagine-bot slack` acks signed `/imagine` requests under load.

The production shape on one machine: `imagine-bot slack` (the real bolt AsyncApp served by
aiohttp, HTTP mode) on PostgreSQL + Redis, a `imagine-bot worker` process with the no-op
renderer (IMAGINE_RENDER_BACKEND=noop: the model's time is taken out), and the fake Slack
(tests/fakes/slack.py) answering the bot's Web API calls in a process of its own. This
process is Slack: it posts signed slash commands at a fixed rate (open loop, spread over 50
users) and times each from sending the request to receiving its HTTP 200 — the ack.

    python bench/slack_ingress.py [--commands 1000] [--rate 250]

Prints {"commands": N, "per_s": r, "p50_ms": a, "p99_ms": b}: per_s is N over the time from the
first request sent to the last ack received. Before printing it checks that every command became
a job in the database (acked work must not be lost), and fails if one did not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scratch import percentile, scratch_postgres_redis  # noqa: E402  (bench/scratch.py)

REDIS = os.environ.get("IMAGINE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
USERS = 50
WARMUP = 20  # first requests sign the bot in and fill its user cache; not counted


def serve_fake_slack(port_out, users: int) -> None:
    """The fake Slack Web API, in a process of its own (so it does not share the bot's CPU time
    with the load generator's event loop)."""
    from tests.fakes.slack import FakeSlack

    async def run() -> None:
        fake = await FakeSlack().start()
        for i in range(users):
            fake.add_user(f"U{i:04d}", f"user{i}")
        port_out.send(fake.port)
        await asyncio.Event().wait()

    asyncio.run(run())


def start_process(args: list[str], env: dict[str, str], log_file: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", *args], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log_file.open("w")
    )


def wait_for_ready(process: subprocess.Popen, log_file: Path, timeout: float = 90.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"imagine-bot slack exited early:\n{log_file.read_text()[-3000:]}")
        match = re.search(r"ready \(http://127\.0\.0\.1:(\d+)/", log_file.read_text())
        if match:
            return int(match.group(1))
        time.sleep(0.1)
    raise RuntimeError("imagine-bot slack did not become ready in time")


async def load(url: str, fake_url: str, count: int, rate: float) -> tuple[list[float], float]:
    """Send `count` signed /imagine requests at `rate` per second; (ack latencies in ms, seconds)."""
    import aiohttp

    from tests.fakes.slack_requests import form_body, sign, slash_command

    latencies: list[float] = []

    async def one(session: aiohttp.ClientSession, i: int, record: bool) -> None:
        body = form_body(
            slash_command(
                "/imagine",
                f"bench prompt {i} --n 1",
                user=f"U{i % USERS:04d}",
                channel=f"C{i % 5}",
                response_url=f"{fake_url}/response/{i}",
            )
        )
        headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(body)}
        started = time.perf_counter()
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"request {i}: HTTP {response.status}")
        if record:
            latencies.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(one(session, -1 - i, False) for i in range(WARMUP)))
        tasks = []
        began = time.perf_counter()
        for i in range(count):
            delay = began + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, i, True)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - began
    return latencies, elapsed


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def count_jobs(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as connection:
        return connection.execute("SELECT count(*) FROM generations").fetchone()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=250.0, help="requests sent per second")
    args = parser.parse_args()

    from tests.fakes.slack import BOT_TOKEN
    from tests.fakes.slack_requests import SIGNING_SECRET

    spawn = multiprocessing.get_context("spawn")
    port_in, port_out = spawn.Pipe(duplex=False)
    fake = spawn.Process(target=serve_fake_slack, args=(port_out, USERS), daemon=True)
    processes: list[subprocess.Popen] = []
    try:
        with scratch_postgres_redis(REDIS) as db_url:
            fake.start()
            fake_url = f"http://127.0.0.1:{port_in.recv()}"
            with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as folder:
                env = {
                    **os.environ,
                    "IMAGINE_DATA_DIR": folder,
                    "IMAGINE_DB_URL": db_url,
                    "IMAGINE_BROKER_URL": REDIS,
                    "IMAGINE_RENDER_BACKEND": "noop",
                    "IMAGINE_QUOTA_DEFAULT_DAILY_IMAGES": "1000000",
                    "IMAGINE_OPS_PORT": "0",
                    "IMAGINE_OPS_LOG_LEVEL": "WARNING",
                    "IMAGINE_SLACK_BOT_TOKEN": BOT_TOKEN,
                    "IMAGINE_SLACK_SIGNING_SECRET": SIGNING_SECRET,
                    "IMAGINE_SLACK_API_URL": f"{fake_url}/api/",
                    "IMAGINE_SLACK_HOST": "127.0.0.1",
                    "IMAGINE_SLACK_PORT": "0",
                }
                logs = Path(folder)
                processes.append(
                    start_process(["worker", "--pool", "solo", "--loglevel", "WARNING"], env, logs / "worker.log")
                )
                bot = start_process(["slack"], env, logs / "slack.log")
                processes.append(bot)
                port = wait_for_ready(bot, logs / "slack.log")
                latencies, elapsed = asyncio.run(
                    load(f"http://127.0.0.1:{port}/slack/events", fake_url, args.commands, args.rate)
                )

                expected = args.commands + WARMUP
                deadline = time.monotonic() + 300
                while (jobs := count_jobs(db_url)) < expected and time.monotonic() < deadline:
                    time.sleep(0.5)
                stop(processes)
                if jobs != expected:
                    print(f"slack_ingress: {jobs} jobs for {expected} acked commands", file=sys.stderr)
                    print((logs / "slack.log").read_text()[-3000:], file=sys.stderr)
                    return 1
    finally:
        stop(processes)
        if fake.is_alive():
            fake.terminate()
    print(
        json.dumps(
            {
                "commands": len(latencies),
                "per_s": round(len(latencies) / elapsed, 1),
                "p50_ms": round(statistics.median(latencies), 2),
                "p99_ms": round(percentile(latencies, 0.99), 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
