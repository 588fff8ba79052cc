"""Finished jobs → the chat. The job row is the truth; wake-ups only say when to look.

One loop per bot process: wait for a wake-up (Redis pub/sub) or the poll interval, then sweep
this platform's undelivered jobs: show progress of running ones (throttled), and deliver
finished ones once across replicas (claim → deliver → mark delivered).

A claim is a lease held under this replica's token. The sweep claims a few jobs at a time; before
each delivery it renews the lease (and skips the job if another replica took it over meanwhile),
keeps renewing it while a slow upload runs, and marks the job delivered only under its own
claim. If the delivery fails, or the bot dies mid-way, the lease goes stale after `lease_s` and a
later sweep of any replica delivers it — as a second attempt (`delivery_attempts` > 1), for
which the adapter first looks at what the first one already posted, so nothing shows twice. A
restart simply sweeps again, so results finished while the bot was down arrive when it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import datetime, timedelta
from typing import Protocol

from engine import metrics
from engine.domain.errors import StoreUnavailable
from engine.domain.types import Platform
from engine.domain.views import GenerationView
from engine.logs import job_context
from engine.notify import Wakeups
from engine.service import Deliveries
from engine.store.models import utcnow

log = logging.getLogger(__name__)

CLOCK_MARGIN = timedelta(seconds=5)


class DeliveryTarget(Protocol):
    """What an adapter implements to show jobs in its platform."""

    platform: Platform

    async def show_progress(self, job: GenerationView) -> None:
        """Update the job's status message (queued/running, progress bar)."""

    async def deliver(self, job: GenerationView) -> None:
        """Post the final result (images, or why it failed / that it was cancelled)."""


class Delivery:
    def __init__(
        self,
        deliveries: Deliveries,
        target: DeliveryTarget,
        wakeups: Wakeups,
        *,
        sweep_interval_s: float = 5.0,
        progress_interval_s: float = 1.5,
        progress_delay_s: float = 0.2,
        lease_s: float = 30.0,
        claim_batch: int = 10,
    ) -> None:
        self.deliveries = deliveries
        self.target = target
        self.wakeups = wakeups
        self.sweep_interval_s = sweep_interval_s
        self.progress_interval_s = progress_interval_s
        # A progress-only wake-up waits this long for the next one before its sweep: a job that
        # just started often finishes moments later (a fast render, the rest of a batch), and
        # one full sweep then shows both — on a busy bot, half the sweeps, and none of them
        # competing for the CPU with the worker storing the result. Progress shows this late.
        self.progress_delay_s = progress_delay_s
        self.lease_s = lease_s
        # Few at a time: jobs this replica has claimed but not reached yet cannot be delivered
        # by another replica, so a large claim only makes the others wait.
        self.claim_batch = claim_batch
        #: This replica's claims: only they let it renew a lease or mark a job delivered.
        self.claim = uuid.uuid4().hex
        self._reclaim = False
        # What each job's status message last showed, and when (progress throttling).
        self._shown: dict[int, tuple[str, float, float]] = {}
        # Active jobs are re-read only when they changed since the last sweep (a burst of
        # thousands of queued jobs must not make every sweep rebuild them all). The margin
        # absorbs clock skew between workers and bots.
        self._active_since: datetime | None = None
        self._kick = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False
        # Set by `_wait` when only progress wake-ups (an active job moved on, none finished)
        # started the next sweep: it then shows progress without claiming — at most until
        # `sweep_interval_s` after the last full sweep, which catches a finish whose wake-up was lost.
        self._progress_only = False
        self._last_full = float("-inf")

    async def start(self) -> None:
        await self.wakeups.start()
        self._task = asyncio.create_task(self.run_forever(), name=f"delivery-{self.target.platform}")

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Let a sweep in progress finish (a cancelled transaction only makes noise), then stop."""
        if self._task:
            self._stopping = True
            self._kick.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        await self.wakeups.close()

    def kick(self) -> None:
        """Sweep now (an adapter just submitted or changed a job)."""
        self._kick.set()

    async def run_forever(self) -> None:
        while not self._stopping:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as error:  # a failover or a blip: nothing to debug
                log.warning("delivery sweep: %s; retrying", error.__cause__ or error)
                await asyncio.sleep(1)
            except Exception:  # noqa: BLE001 - keep delivering whatever one sweep hit
                log.exception("delivery sweep failed; retrying")
                await asyncio.sleep(1)
            await self._wait()

    async def _wait(self) -> None:
        self._progress_only = False
        if self._kick.is_set():
            self._kick.clear()
            return
        woken, kicked = await self._next_wake(self.sweep_interval_s)
        progress_only = woken and not kicked and self.wakeups.progress_only
        if progress_only and self.progress_delay_s > 0:
            woken, kicked = await self._next_wake(self.progress_delay_s)
            # Still only progress unless what came meanwhile was a finish or a kick.
            progress_only = not kicked and (not woken or self.wakeups.progress_only)
        self._progress_only = progress_only

    async def _next_wake(self, timeout_s: float) -> tuple[bool, bool]:
        """Wait for a wake-up or a kick, at most `timeout_s`: (woken, kicked)."""
        if self._kick.is_set():
            self._kick.clear()
            return False, True
        kick = asyncio.create_task(self._kick.wait())
        wake = asyncio.create_task(self.wakeups.wait(timeout_s))
        try:
            await asyncio.wait({kick, wake}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (kick, wake):
                task.cancel()
            kicked = self._kick.is_set()
            self._kick.clear()
        woken = wake.done() and not wake.cancelled() and wake.exception() is None and bool(wake.result())
        return woken, kicked

    async def sweep(self) -> int:
        """Show progress and deliver results once; returns how many results were delivered."""
        started = utcnow()
        claimed_at = time.monotonic()
        # Only progress to show (no job finished since the last look): no claim, one statement.
        full = not self._progress_only or self._reclaim or claimed_at - self._last_full >= self.sweep_interval_s
        self._progress_only = False
        try:
            claimed, active = await self.deliveries.claim_deliveries(
                self.target.platform,
                self.claim,
                self.lease_s,
                active_since=self._active_since,
                limit=self.claim_batch if full else 0,
                reclaim=self._reclaim,
            )
        except StoreUnavailable:
            # The claim may have committed although its answer was lost: take what this
            # replica holds back at the next sweep instead of leaving it for the lease.
            self._reclaim = True
            raise
        self._reclaim = False
        if full:
            self._last_full = claimed_at
        self._active_since = started - CLOCK_MARGIN
        now = time.monotonic()
        for job in active:
            await self._progress(job, now)
        delivered = 0
        for job in claimed:
            delivered += await self._deliver(job, claimed_at)
        if len(claimed) == self.claim_batch:
            self.kick()  # more may be waiting: sweep again at once
        return delivered

    async def _progress(self, job: GenerationView, now: float) -> None:
        shown = self._shown.get(job.id)
        state = str(job.status)
        if shown is not None:
            last_state, last_progress, last_time = shown
            if last_state == state and (
                job.progress - last_progress < 0.01 or now - last_time < self.progress_interval_s
            ):
                return
        self._shown[job.id] = (state, job.progress, now)
        try:
            await self.target.show_progress(job)
        except Exception:  # noqa: BLE001 - progress is best effort; the result is what matters
            log.warning("job %s: progress update failed", job.id, exc_info=True)

    async def _deliver(self, job: GenerationView, claimed_at: float) -> bool:
        with job_context(job.id):
            return await self._deliver_one(job, claimed_at)

    async def _deliver_one(self, job: GenerationView, claimed_at: float) -> bool:
        # The claim may be older than the lease by now (deliveries before this one were slow):
        # renewing it is also the check that no other replica took the job over. A claim made
        # moments ago cannot have been taken over yet: no round trip for it (the common case).
        if time.monotonic() - claimed_at > self.lease_s / 3 and not await self.deliveries.renew_delivery(
            job.id, self.claim
        ):
            log.info("job %s: delivered or claimed by another replica meanwhile; skipping it", job.id)
            return False
        keeper = asyncio.create_task(self._keep_claim(job.id))
        try:
            await self.target.deliver(job)
        except StoreUnavailable as error:
            # The database blinked between two steps: retry at the next sweep, not after the
            # lease (a step already done is found again: `delivery_attempts` goes up).
            log.warning(
                "job %s: delivery interrupted (%s); retrying at the next sweep", job.id, error.__cause__ or error
            )
            with contextlib.suppress(Exception):
                await self.deliveries.release_delivery(job.id, self.claim)
            return False
        except Exception:  # noqa: BLE001 - never lose a result: the claim expires, a sweep retries
            log.exception("job %s: delivery failed; retrying in %.0f s", job.id, self.lease_s)
            return False
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        if not await self.deliveries.mark_delivered(job.id, self.claim):
            log.warning(
                "job %s: delivered, but the claim had passed to another replica (this "
                "replica stalled for longer than the %.0f s lease)",
                job.id,
                self.lease_s,
            )
            return False
        if job.finished_at is not None:
            metrics.JOB_SECONDS.labels(phase="delivery").observe(max(0.0, (utcnow() - job.finished_at).total_seconds()))
        self._shown.pop(job.id, None)
        log.info("job %s delivered (%s)", job.id, job.status)
        return True

    async def _keep_claim(self, job_id: int) -> None:
        """Renew the lease while one delivery runs (a slow upload must not lose it)."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                if not await self.deliveries.renew_delivery(job_id, self.claim):
                    log.warning("job %s: lost the delivery claim while delivering", job_id)
                    return
            except Exception as error:  # noqa: BLE001 - try again; the lease has slack
                log.warning("job %s: delivery lease not renewed: %s", job_id, error)
