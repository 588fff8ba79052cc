"""The console front-end: the same commands as the chat bots, typed or read from a script.

It is a real adapter: commands go through the shared parser and runner into the service, jobs
go through Celery to a worker, and results come back through the delivery loop, which calls
`deliver` here. Each command that queues a job waits for that job before the next line runs,
so a script can vary what it just imagined (`/vary last:2`).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path
from typing import TextIO

from bot import replies
from bot.commands import Limits, parse_command
from bot.delivery import Delivery
from bot.runner import CommandRunner
from bot.runtime import BotRuntime
from engine.domain.errors import UsageError
from engine.domain.types import Actor, GenerationStatus, Platform
from engine.domain.views import GenerationView


class ConsoleAdapter:
    platform = Platform.CONSOLE

    def __init__(
        self,
        runtime: BotRuntime,
        *,
        user: str = "local",
        out_dir: Path = Path("imagine-out"),
        stream: TextIO = sys.stdout,
        job_timeout_s: float = 600.0,
    ) -> None:
        self.runtime = runtime
        self.out_dir = out_dir
        self.stream = stream
        self.job_timeout_s = job_timeout_s
        # The person at the keyboard runs the bot: they are its admin.
        self.actor = Actor(
            Platform.CONSOLE, team_id="local", user_id=user, user_name=user, team_name="console", is_platform_admin=True
        )
        settings = runtime.settings
        self.limits = Limits(max_steps=settings.limits.max_steps, max_guidance=settings.limits.max_guidance)
        self.runner = CommandRunner(runtime.service, gallery_links=runtime.gallery_links())
        self.delivery = Delivery(
            runtime.deliveries, self, runtime.wakeups(), sweep_interval_s=1.0, progress_interval_s=0.5
        )
        self._finished: dict[int, asyncio.Future[GenerationView]] = {}
        self._tty = stream.isatty() if hasattr(stream, "isatty") else False
        self.errors = 0

    def say(self, text: str = "", end: str = "\n") -> None:
        self.stream.write(text + end)
        self.stream.flush()

    # --- DeliveryTarget ----------------------------------------------------------------------

    async def show_progress(self, job: GenerationView) -> None:
        if job.status == GenerationStatus.QUEUED:
            return  # the command's own reply already said "queued, position N"
        line = replies.job_status(job)
        if self._tty:
            self.say("\r" + line.ljust(100), end="")
        else:
            self.say(line)

    async def deliver(self, job: GenerationView) -> None:
        if self._tty:
            self.say("\r" + " " * 100 + "\r", end="")
        self.say(replies.job_status(job))
        if job.status == GenerationStatus.DONE:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            store = self.runtime.store
            if job.grid_key:
                grid = self.out_dir / f"job-{job.id}-grid.png"
                shutil.copyfile(store.path(job.grid_key), grid)
                self.say(f"  grid:    {grid}")
            for image in job.images:
                path = self.out_dir / f"job-{job.id}-{image.index}.png"
                shutil.copyfile(store.path(image.storage_key), path)
                self.say(f"  image {image.index}: {path}  ({image.width}x{image.height}, seed {image.seed})")
        else:
            self.errors += 1
        future = self._finished.pop(job.id, None)
        if future is not None and not future.done():
            future.set_result(job)

    # --- running commands --------------------------------------------------------------------

    async def execute(self, line: str) -> replies.Reply | None:
        """Run one command line and, if it queued a job, wait for that job to be delivered."""
        line = line.strip()
        if not line or line.startswith("#"):
            return None
        try:
            command = parse_command(line, self.limits)
        except UsageError as error:
            self.errors += 1
            self.say(f"error: {error.message}")
            return replies.Reply(error.message, is_error=True)
        reply = await self.runner.run(self.actor, command)
        if reply.is_error:
            self.errors += 1
            self.say(f"error: {reply.text}")
            return reply
        self.say(reply.text)
        job = reply.job
        if job is not None and reply.queue_position is not None:
            future = asyncio.get_running_loop().create_future()
            self._finished[job.id] = future
            self.delivery.kick()
            try:
                await asyncio.wait_for(future, self.job_timeout_s)
            except TimeoutError:
                self.errors += 1
                self.say(
                    f"error: job #{job.id} did not finish within {self.job_timeout_s:.0f} s "
                    "(is a worker running? see `imagine-bot worker`)"
                )
        return reply

    async def run_script(self, lines: list[str]) -> int:
        """Run each line in order, echoing it; returns the number of commands that failed."""
        await self.delivery.start()
        try:
            for line in lines:
                if line.strip() and not line.strip().startswith("#"):
                    self.say(f"> {line.strip()}")
                await self.execute(line)
        finally:
            await self.delivery.stop()
        return self.errors

    async def run_interactive(self) -> int:
        await self.delivery.start()
        self.say("imagine-bot console. Type /help for commands, Ctrl-D to quit.")
        try:
            while True:
                try:
                    line = await asyncio.to_thread(input, "imagine> ")
                except EOFError:
                    self.say()
                    break
                await self.execute(line)
        finally:
            await self.delivery.stop()
        return 0
