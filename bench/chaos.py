"""Chaos: the faults production sees every day, injected into the production shape, and an audit
of every job, image, PNG, ledger entry and delivery afterwards.

The shape, per broker (Redis, then RabbitMQ), all on this machine:
- `imagine-bot worker` × 3 (solo pool, its own process each) with the no-op renderer sleeping
  0.3–2 s per job (IMAGINE_RENDER_NOOP_DELAY_MS), restarted like a supervisor would;
- `imagine-bot slack` × 2 replicas (HTTP mode) in front of the fake Slack (tests/fakes/
  slack.py, its own process), whose file uploads take 0.4 s each;
- PostgreSQL: a scratch database of its own; Redis: a private redis-server on a free port (the
  broker of the Redis run, the wake-ups of both), so pausing and cutting it touches nobody else;
  RabbitMQ: a vhost of its own. Nothing shared is flushed or stopped.

This process is Slack: it posts signed `/imagine` commands (1–4 images, 20 users) through the
phases, each followed by a wait until every job is finished and delivered (its recovery time):
1. SIGKILL of whole worker processes while they render (12; 3 with --quick);
2. `pg_terminate_backend` of every connection to the scratch database about once a second for a
   minute (10 s with --quick);
3. the broker: Redis paused (`CLIENT PAUSE`) then every connection cut (`CLIENT KILL`);
   RabbitMQ's connections closed (`rabbitmqctl close_all_connections --vhost`) and the wake-up
   Redis paused;
4. both bot replicas SIGKILLed while their jobs render, restarted once the jobs are done (a
   backlog delivered by two replicas with slow uploads), then one replica SIGKILLed in the middle
   of delivering a burst;
5. a worker killed between its batch leader's store and its followers' (a failpoint,
   engine/faults.py).
The full run keeps the default leases (a dead worker's job back after 20 s, a dead replica's
delivery after 30 s); --quick shortens them (8 s, 10 s) to fit CI: recovery is waiting for them.

    python bench/chaos.py [--quick] [--brokers redis,rabbitmq]

Prints, per broker, {"jobs", "lost", "stuck", "rendered_twice", "delivered_twice",
"quota_mismatch", "failed", "max_recovery_s", "recovery_s": {phase: s}, "faults": {...}}.
`lost`: an acknowledged command with neither a job nor an answer saying why, or a job never
delivered; `stuck`: a job not finished at the end; `rendered_twice`: a finished job whose image
rows, files and hashes disagree (a second render that changed the stored images);
`delivered_twice`: a job with more than one grid or result message in Slack; `quota_mismatch`: a
user whose usage disagrees with the ledger, or a job charged other than once (refunded iff it
did not finish done); `failed`: jobs that ended failed (refunded, the user told — e.g. a publish
while the broker was paused). Exits 1 if any of the first five is not 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG_ADMIN = os.environ.get("IMAGINE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBIT = os.environ.get("IMAGINE_BENCH_RABBIT_URL", "amqp://guest:guest@127.0.0.1:5672")
USERS = 20
WORKERS = 3
APP = "chaos-bench"  # this process's own database connections: never terminated
RECOVERY_TIMEOUT_S = 240


@dataclass
class Plan:
    kills: int
    pg_seconds: float
    burst: int
    mid_delivery_kills: int
    batch_kills: int
    rate: float  # commands per second during the fault phases
    #: Settings of every process beyond the run's own (empty: the defaults production runs).
    settings: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_run(cls, quick: bool) -> Plan:
        if quick:
            # Recovering from a killed worker or bot is waiting for its lease to run out (20 s
            # and 30 s by default): most of the quick run's four minutes went to those waits.
            # Shorter leases, renewed as often relative to them, take the same code paths.
            short_leases = {
                "IMAGINE_WORKER_HEARTBEAT_S": "2",
                "IMAGINE_WORKER_LEASE_S": "8",
                "IMAGINE_WORKER_SWEEP_INTERVAL_S": "2",
                "IMAGINE_SLACK_DELIVERY_LEASE_S": "10",
                "IMAGINE_SLACK_DELIVERY_SWEEP_S": "2",
            }
            return cls(
                kills=3, pg_seconds=10, burst=10, mid_delivery_kills=1, batch_kills=1, rate=2.0, settings=short_leases
            )
        return cls(kills=12, pg_seconds=60, burst=40, mid_delivery_kills=2, batch_kills=2, rate=3.0)


# --- the servers of one run -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A redis-server of this run's own, on a free port, without persistence."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        self.client = redis.Redis(port=self.port, socket_timeout=5)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.client.ping()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


class RabbitVhost:
    def __init__(self) -> None:
        self.name = f"imagine_chaos_{uuid.uuid4().hex[:8]}"
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", self.name], check=True, capture_output=True)
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", self.name, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
        )

    def url(self) -> str:
        return f"{RABBIT}/{self.name}"

    def close_connections(self) -> None:
        subprocess.run(
            [
                "rabbitmqctl",
                "-q",
                "close_all_connections",
                "--vhost",
                self.name,
                "--limit",
                "1000",
                "chaos: dropped broker connection",
            ],
            check=True,
            capture_output=True,
        )

    def delete(self) -> None:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", self.name], capture_output=True)


class ScratchDatabase:
    def __init__(self) -> None:
        import psycopg

        self.name = f"imagine_chaos_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{self.name}"')
        self.url = PG_ADMIN.rsplit("/", 1)[0] + f"/{self.name}"
        from engine.store.migrate import upgrade

        upgrade(self.url)

    def rows(self, sql: str, *args) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url, application_name=APP) as connection:
            return connection.execute(sql, args).fetchall()

    def terminate_all(self) -> int:
        """pg_terminate_backend every connection to this database but the bench's own."""
        return len(
            self.rows(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND coalesce(application_name, '') <> %s",
                APP,
            )
        )

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def serve_fake_slack(port_out, users: int, upload_delay_s: float) -> None:
    from tests.fakes.slack import FakeSlack

    async def run() -> None:
        fake = FakeSlack()
        fake.upload_delay_s = upload_delay_s
        await fake.start()
        for i in range(users):
            fake.add_user(f"U{i:04d}", f"user{i}")
        port_out.send(fake.port)
        await asyncio.Event().wait()

    asyncio.run(run())


# --- the processes under test ---------------------------------------------------------------


@dataclass
class Cluster:
    env: dict[str, str]
    logs: Path
    workers: list[subprocess.Popen] = field(default_factory=list)
    bots: list[subprocess.Popen | None] = field(default_factory=lambda: [None, None])
    bot_urls: list[str | None] = field(default_factory=lambda: [None, None])
    started: int = 0

    def _spawn(self, args: list[str], name: str, extra: dict[str, str] | None = None) -> subprocess.Popen:
        self.started += 1
        log = (self.logs / f"{name}-{self.started}.log").open("w")
        return subprocess.Popen(
            [sys.executable, "-m", "bot", *args],
            env={**self.env, **(extra or {})},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )

    def start_worker(self, *, failpoint: bool = False) -> subprocess.Popen:
        extra = {"IMAGINE_FAILPOINTS": "worker.after_store=kill"} if failpoint else None
        worker = self._spawn(["worker", "--pool", "solo", "--loglevel", "INFO"], "worker", extra)
        self.workers.append(worker)
        return worker

    def live_workers(self) -> list[subprocess.Popen]:
        return [w for w in self.workers if w.poll() is None]

    def start_bot(self, slot: int) -> None:
        process = self._spawn(["slack"], f"slack{slot}")
        log_file = self.logs / f"slack{slot}-{self.started}.log"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"imagine-bot slack exited early:\n{log_file.read_text()[-3000:]}")
            match = re.search(r"ready \(http://127\.0\.0\.1:(\d+)/", log_file.read_text())
            if match:
                self.bots[slot] = process
                self.bot_urls[slot] = f"http://127.0.0.1:{match.group(1)}/slack/events"
                return
            time.sleep(0.1)
        raise RuntimeError("imagine-bot slack did not become ready in time")

    def kill_bot(self, slot: int) -> None:
        process = self.bots[slot]
        if process is not None:
            process.kill()
            process.wait()
        self.bots[slot] = None
        self.bot_urls[slot] = None

    def stop_all(self) -> None:
        everything = [p for p in [*self.workers, *self.bots] if p is not None and p.poll() is None]
        for process in everything:
            process.send_signal(signal.SIGTERM)
        for process in everything:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


# --- load -----------------------------------------------------------------------------------


class Slack:
    """Posts signed slash commands to whichever replica is up, like Slack would."""

    def __init__(self, cluster: Cluster, fake_url: str) -> None:
        self.cluster = cluster
        self.fake_url = fake_url
        self.acked: dict[str, int] = {}  # hook → the command's number
        self.sent = 0
        self._http = None

    async def __aenter__(self) -> Slack:
        import aiohttp

        self._http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._http.close()

    async def imagine(self, n: int | None = None, seed: int | None = None) -> None:
        from tests.fakes.slack_requests import form_body, sign, slash_command

        number = self.sent
        self.sent += 1
        n = n or random.randint(1, 4)
        seed = seed if seed is not None else random.randint(0, 10**6)
        hook = f"cmd{number}"
        body = form_body(
            slash_command(
                "/imagine",
                f"chaos {number} --n {n} --seed {seed}",
                user=f"U{number % USERS:04d}",
                channel=f"C{number % 3}",
                response_url=f"{self.fake_url}/response/{hook}",
            )
        )
        headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(body)}
        for _ in range(20):
            urls = [u for u in self.cluster.bot_urls if u]
            if urls:
                try:
                    async with self._http.post(random.choice(urls), data=body, headers=headers) as response:
                        await response.read()
                        if response.status == 200:
                            self.acked[hook] = number
                            return
                except Exception:  # noqa: BLE001 - that replica is down: Slack would show an error
                    pass
            await asyncio.sleep(0.5)

    async def steady(self, rate: float, stop: asyncio.Event) -> None:
        """Commands at `rate` per second until `stop` is set."""
        tasks = []
        while not stop.is_set():
            tasks.append(asyncio.create_task(self.imagine()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1 / rate)
        await asyncio.gather(*tasks)


# --- a run ----------------------------------------------------------------------------------


class Run:
    def __init__(
        self,
        broker: str,
        plan: Plan,
        db: ScratchDatabase,
        cluster: Cluster,
        slack: Slack,
        redis: PrivateRedis,
        vhost: RabbitVhost | None,
        fake_url: str,
    ) -> None:
        self.broker = broker
        self.plan = plan
        self.db = db
        self.cluster = cluster
        self.slack = slack
        self.redis = redis
        self.vhost = vhost
        self.fake_url = fake_url
        self.recovery: dict[str, float] = {}
        self.faults: dict[str, int] = {
            "worker_kills": 0,
            "pg_terminations": 0,
            "bot_kills": 0,
            "batch_kills": 0,
            "broker_faults": 0,
        }

    def _state(self) -> dict:
        import urllib.request

        with urllib.request.urlopen(f"{self.fake_url}/_state", timeout=30) as response:
            return json.loads(response.read())

    def settled(self) -> bool:
        """Every acknowledged command has a job or was answered with why not, and every job is
        finished and delivered."""
        try:
            open_jobs = self.db.rows("SELECT count(*) FROM generations WHERE delivered_at IS NULL")[0][0]
            prompts = {p for (p,) in self.db.rows("SELECT prompt FROM generations")}
        except Exception:  # noqa: BLE001 - the database is being hit on purpose
            return False
        if open_jobs:
            return False
        answered = {r["hook"] for r in self._state()["responses"]}
        return all(f"chaos {n}" in prompts or hook in answered for hook, n in self.slack.acked.items())

    async def recover(self, phase: str, fault_ended: float) -> None:
        while not await asyncio.to_thread(self.settled):
            if time.monotonic() - fault_ended > RECOVERY_TIMEOUT_S:
                print(f"chaos: {self.broker}/{phase}: not settled after {RECOVERY_TIMEOUT_S} s", file=sys.stderr)
                break
            await asyncio.sleep(0.25)
        self.recovery[phase] = round(time.monotonic() - fault_ended, 1)
        print(f"chaos: {self.broker}/{phase}: recovered in {self.recovery[phase]} s", file=sys.stderr)

    def running_worker_pids(self) -> set[int]:
        try:
            rows = self.db.rows("SELECT worker FROM generations WHERE status = 'running'")
        except Exception:  # noqa: BLE001
            return set()
        return {int(w.rsplit(":", 1)[1]) for (w,) in rows if w}

    async def ensure_workers(self) -> None:
        while len(self.cluster.live_workers()) < WORKERS:
            self.cluster.start_worker()
        await asyncio.sleep(0)

    # 1 ---------------------------------------------------------------------------------------
    async def worker_kills(self) -> None:
        stop = asyncio.Event()
        load = asyncio.create_task(self.slack.steady(self.plan.rate, stop))
        last = time.monotonic()
        while self.faults["worker_kills"] < self.plan.kills:
            await asyncio.sleep(random.uniform(2.0, 3.5))
            busy = [w for w in self.cluster.live_workers() if w.pid in self.running_worker_pids()]
            if not busy:
                continue
            victim = random.choice(busy)
            victim.kill()  # SIGKILL: the whole solo worker, like the OOM killer
            victim.wait()
            self.faults["worker_kills"] += 1
            last = time.monotonic()
            await self.ensure_workers()
        stop.set()
        await load
        await self.recover("worker_kills", last)

    # 2 ---------------------------------------------------------------------------------------
    async def pg_terminations(self) -> None:
        stop = asyncio.Event()
        load = asyncio.create_task(self.slack.steady(self.plan.rate, stop))
        ends = time.monotonic() + self.plan.pg_seconds
        while time.monotonic() < ends:
            self.faults["pg_terminations"] += await asyncio.to_thread(self.db.terminate_all)
            await asyncio.sleep(random.uniform(0.5, 1.0))
        last = time.monotonic()
        stop.set()
        await load
        await self.recover("pg_terminations", last)

    # 3 ---------------------------------------------------------------------------------------
    async def broker_faults(self) -> None:
        stop = asyncio.Event()
        load = asyncio.create_task(self.slack.steady(self.plan.rate, stop))
        await asyncio.sleep(3)
        if self.broker == "redis":
            self.redis.client.execute_command("CLIENT", "PAUSE", "5000", "ALL")
            self.faults["broker_faults"] += 1
            await asyncio.sleep(8)
            for kind in ("normal", "pubsub"):
                self.redis.client.execute_command("CLIENT", "KILL", "TYPE", kind)
            self.faults["broker_faults"] += 1
        else:
            await asyncio.to_thread(self.vhost.close_connections)
            self.faults["broker_faults"] += 1
            await asyncio.sleep(5)
            self.redis.client.execute_command("CLIENT", "PAUSE", "5000", "ALL")
            self.faults["broker_faults"] += 1
            await asyncio.sleep(6)
            await asyncio.to_thread(self.vhost.close_connections)
            self.faults["broker_faults"] += 1
        last = time.monotonic()
        await asyncio.sleep(3)
        stop.set()
        await load
        await self.recover("broker", last)

    # 4 ---------------------------------------------------------------------------------------
    async def bot_kills(self) -> None:
        # a) both replicas down while a burst renders; back up to a backlog of deliveries.
        first = self.slack.sent
        await asyncio.gather(*(self.slack.imagine() for _ in range(self.plan.burst)))
        await self._wait_for_rows(first, self.slack.sent)
        for slot in (0, 1):
            self.cluster.kill_bot(slot)
            self.faults["bot_kills"] += 1
        while (
            await asyncio.to_thread(
                self.db.rows, "SELECT count(*) FROM generations WHERE status IN ('queued', 'running')"
            )
        )[0][0]:
            await asyncio.sleep(0.25)
        for slot in (0, 1):
            await asyncio.to_thread(self.cluster.start_bot, slot)
        await self.recover("bots_down_backlog", time.monotonic())

        # b) one replica killed in the middle of delivering a burst.
        last = time.monotonic()
        for _ in range(self.plan.mid_delivery_kills):
            first = self.slack.sent
            await asyncio.gather(*(self.slack.imagine() for _ in range(self.plan.burst)))
            await self._wait_for_deliveries(first, 3)
            slot = random.choice([0, 1])
            self.cluster.kill_bot(slot)
            self.faults["bot_kills"] += 1
            last = time.monotonic()
            await asyncio.sleep(2)
            await asyncio.to_thread(self.cluster.start_bot, slot)
        await self.recover("bot_killed_mid_delivery", last)

    async def _wait_for_rows(self, first: int, end: int) -> None:
        wanted = {f"chaos {n}" for n in range(first, end)}
        for _ in range(600):
            prompts = {p for (p,) in await asyncio.to_thread(self.db.rows, "SELECT prompt FROM generations")}
            if wanted <= prompts:
                return
            await asyncio.sleep(0.1)

    async def _wait_for_deliveries(self, first: int, count: int) -> None:
        for _ in range(600):
            rows = await asyncio.to_thread(
                self.db.rows,
                "SELECT count(*) FROM generations WHERE delivered_at IS NOT NULL AND prompt = ANY(%s)",
                [f"chaos {n}" for n in range(first, self.slack.sent)],
            )
            if rows[0][0] >= count:
                return
            await asyncio.sleep(0.05)

    # 5 ---------------------------------------------------------------------------------------
    async def batch_kills(self) -> None:
        last = time.monotonic()
        for _ in range(self.plan.batch_kills):
            for worker in self.cluster.live_workers():  # graceful: nothing is rendering after this
                worker.send_signal(signal.SIGTERM)
            for worker in self.cluster.live_workers():
                await asyncio.to_thread(worker.wait)
            first = self.slack.sent
            # Same parameters, one image each: the failpoint worker claims them as one batch.
            await asyncio.gather(*(self.slack.imagine(n=1) for _ in range(6)))
            await self._wait_for_rows(first, self.slack.sent)
            victim = self.cluster.start_worker(failpoint=True)
            await asyncio.to_thread(victim.wait, 120)
            self.faults["batch_kills"] += victim.returncode == -signal.SIGKILL
            last = time.monotonic()
            await self.ensure_workers()
        await self.recover("batch_kill", last)

    # the audit -------------------------------------------------------------------------------
    def audit(self, images_dir: Path) -> dict:
        rows = self.db.rows(
            "SELECT id, prompt, status, params, cost, requester_id, delivered_at IS NOT NULL FROM generations"
        )
        images = self.db.rows("SELECT generation_id, storage_key, sha256 FROM images")
        ledger = self.db.rows("SELECT generation_id, user_id, kind, amount FROM quota_ledger")
        usage = self.db.rows("SELECT user_id, sum(used) FROM quota_usage GROUP BY user_id")
        state = self._state()

        by_prompt = {prompt: job_id for job_id, prompt, *_ in rows}
        answered = {r["hook"] for r in state["responses"]}
        lost = sum(1 for hook, n in self.slack.acked.items() if f"chaos {n}" not in by_prompt and hook not in answered)
        lost += sum(1 for *_, delivered in rows if not delivered)
        stuck = sum(1 for _, _, status, *_ in rows if status in ("queued", "running"))

        images_of: dict[int, list[tuple[str, str]]] = {}
        for job_id, key, sha in images:
            images_of.setdefault(job_id, []).append((key, sha))
        rendered_twice = 0
        for job_id, _, status, params, *_ in rows:
            stored = images_of.get(job_id, [])
            if status != "done":
                rendered_twice += bool(stored)
                continue
            n = int((params or {}).get("n", 4))
            ok = len(stored) == n and all(
                (images_dir / key).exists() and hashlib.sha256((images_dir / key).read_bytes()).hexdigest() == sha
                for key, sha in stored
            )
            rendered_twice += not ok

        results: dict[int, int] = {}
        for message in state["messages"]:
            metadata = message.get("metadata") or {}
            if metadata.get("event_type") in ("imagine_result", "imagine_outcome"):
                job_id = metadata["event_payload"]["job_id"]
                results[job_id] = results.get(job_id, 0) + 1
        grids: dict[int, int] = {}
        for file in state["files"]:
            match = re.match(r"imagine-(\d+)\.", file["name"])
            if match and file["complete"] and file["shares"]:
                grids[int(match.group(1))] = grids.get(int(match.group(1)), 0) + 1
        delivered_twice = sum(1 for count in [*results.values(), *grids.values()] if count > 1)
        lost += sum(
            1
            for job_id, _, status, *_ in rows
            if status == "done" and (results.get(job_id, 0) == 0 or grids.get(job_id, 0) == 0)
        )

        quota_mismatch = 0
        entries: dict[int, list[tuple[str, int]]] = {}
        net: dict[int, int] = {}
        for job_id, user_id, kind, amount in ledger:
            entries.setdefault(job_id, []).append((kind, amount))
            net[user_id] = net.get(user_id, 0) + (amount if kind == "debit" else -amount)
        for job_id, _, status, _, cost, *_ in rows:
            kinds = sorted(kind for kind, _ in entries.get(job_id, []))
            debit = [a for k, a in entries.get(job_id, []) if k == "debit"]
            expected = ["debit"] if status == "done" else ["debit", "refund"]
            quota_mismatch += kinds != expected or debit != [cost]
        quota_mismatch += sum(1 for user_id, used in usage if net.get(user_id, 0) != used)

        return {
            "jobs": len(rows),
            "commands": len(self.slack.acked),
            "lost": lost,
            "stuck": stuck,
            "rendered_twice": rendered_twice,
            "delivered_twice": delivered_twice,
            "quota_mismatch": quota_mismatch,
            "failed": sum(1 for _, _, status, *_ in rows if status == "failed"),
            "max_recovery_s": max(self.recovery.values(), default=0.0),
            "recovery_s": self.recovery,
            "faults": self.faults,
        }


async def run_broker(broker: str, plan: Plan, folder: Path, keep_logs: Path | None = None) -> dict:
    spawn = multiprocessing.get_context("spawn")
    port_in, port_out = spawn.Pipe(duplex=False)
    fake = spawn.Process(target=serve_fake_slack, args=(port_out, USERS, 0.4), daemon=True)
    fake.start()
    fake_url = f"http://127.0.0.1:{port_in.recv()}"
    redis = PrivateRedis(folder)
    vhost = RabbitVhost() if broker == "rabbitmq" else None
    db = ScratchDatabase()
    cluster = None
    try:
        from tests.fakes.slack import BOT_TOKEN
        from tests.fakes.slack_requests import SIGNING_SECRET

        env = {
            **os.environ,
            "IMAGINE_DATA_DIR": str(folder),
            "IMAGINE_DB_URL": db.url,
            "IMAGINE_BROKER_URL": redis.url(0) if broker == "redis" else vhost.url(),
            "IMAGINE_BROKER_NOTIFY_URL": redis.url(1),
            "IMAGINE_RENDER_BACKEND": "noop",
            "IMAGINE_RENDER_NOOP_DELAY_MS": "300-2000",
            "IMAGINE_QUOTA_DEFAULT_DAILY_IMAGES": "1000000",
            "IMAGINE_OPS_PORT": "0",
            "IMAGINE_SLACK_BOT_TOKEN": BOT_TOKEN,
            "IMAGINE_SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "IMAGINE_SLACK_API_URL": f"{fake_url}/api/",
            "IMAGINE_SLACK_HOST": "127.0.0.1",
            "IMAGINE_SLACK_PORT": "0",
            **plan.settings,
        }
        logs = folder / "logs"
        logs.mkdir()
        cluster = Cluster(env, logs)
        for _ in range(WORKERS):
            cluster.start_worker()
        for slot in (0, 1):
            await asyncio.to_thread(cluster.start_bot, slot)
        async with Slack(cluster, fake_url) as slack:
            run = Run(broker, plan, db, cluster, slack, redis, vhost, fake_url)
            await asyncio.gather(*(slack.imagine() for _ in range(4)))  # warm-up
            await run.recover("warm_up", time.monotonic())
            await run.worker_kills()
            await run.pg_terminations()
            await run.broker_faults()
            await run.bot_kills()
            await run.batch_kills()
            run.recovery.pop("warm_up", None)
            cluster.stop_all()
            result = await asyncio.to_thread(run.audit, folder / "images")
        bad = [k for k in ("lost", "stuck", "rendered_twice", "delivered_twice", "quota_mismatch") if result[k]]
        if keep_logs is not None:
            shutil.copytree(logs, keep_logs / broker, dirs_exist_ok=True)
        if bad:
            keep = Path(tempfile.mkdtemp(prefix=f"chaos-{broker}-logs-"))
            shutil.copytree(logs, keep, dirs_exist_ok=True)
            print(f"chaos: {broker}: {', '.join(bad)} not 0; logs kept in {keep}", file=sys.stderr)
        return result
    finally:
        if cluster is not None:
            cluster.stop_all()
        db.drop()
        redis.stop()
        if vhost is not None:
            vhost.delete()
        fake.terminate()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the small version CI runs (a few minutes)")
    parser.add_argument("--brokers", default="redis,rabbitmq")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy every process's log here")
    args = parser.parse_args()
    random.seed(args.seed)
    plan = Plan.for_run(args.quick)
    results = {}
    for broker in args.brokers.split(","):
        with tempfile.TemporaryDirectory(prefix=f"chaos-{broker}-", ignore_cleanup_errors=True) as folder:
            started = time.monotonic()
            results[broker] = asyncio.run(run_broker(broker, plan, Path(folder), args.keep_logs))
            results[broker]["seconds"] = round(time.monotonic() - started)
    print(json.dumps(results))
    worst = [
        r[k] for r in results.values() for k in ("lost", "stuck", "rendered_twice", "delivered_twice", "quota_mismatch")
    ]
    return 0 if not any(worst) else 1


if __name__ == "__main__":
    raise SystemExit(main())
