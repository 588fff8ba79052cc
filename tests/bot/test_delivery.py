"""The delivery loop: results reach the chat once, survive restarts and failed sends."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from bot.delivery import Delivery
from engine.domain.types import Actor, GenerationStatus, ImagineRequest, Platform, RenderParams
from engine.notify import PollingWakeups
from tests.engine.test_service import finish

ALICE = Actor(Platform.CONSOLE, "team-1", "alice", "Alice")


class Target:
    platform = Platform.CONSOLE

    def __init__(self, fail_times: int = 0) -> None:
        self.delivered: list[int] = []
        self.progress: list[tuple[int, str, float]] = []
        self.fail_times = fail_times

    async def show_progress(self, job) -> None:
        self.progress.append((job.id, str(job.status), job.progress))

    async def deliver(self, job) -> None:
        if self.fail_times:
            self.fail_times -= 1
            raise ConnectionError("chat API down")
        self.delivered.append(job.id)


def delivery(deliveries, target, **kw) -> Delivery:
    return Delivery(deliveries, target, PollingWakeups(0.01), **kw)


async def submit(service):
    request = ImagineRequest("a red star", params=RenderParams(n=2))
    return (await service.submit_imagine(ALICE, request)).generation


async def test_finished_job_is_delivered_once(service, deliveries, database):
    """A finished job is delivered and marked; later sweeps do not deliver it again."""
    job = await submit(service)
    await finish(database, job.id, images=2)
    target = Target()
    loop = delivery(deliveries, target)
    assert await loop.sweep() == 1
    assert await loop.sweep() == 0
    assert target.delivered == [job.id]
    assert (await deliveries.generation(job.id)).delivered_at is not None


async def test_results_finished_while_down_arrive_after_restart(service, deliveries, database):
    """Jobs that finished while no bot was running are delivered by the next bot's first sweep."""
    jobs = [await submit(service) for _ in range(3)]
    for job in jobs:
        await finish(database, job.id, images=2)
    target = Target()
    assert await delivery(deliveries, target).sweep() == 3  # a fresh process: nothing in memory
    assert sorted(target.delivered) == [j.id for j in jobs]


async def test_failed_delivery_is_retried_not_lost(service, deliveries, database):
    """When the chat API fails, the claim expires and a later sweep delivers."""
    job = await submit(service)
    await finish(database, job.id, images=2)
    target = Target(fail_times=1)
    loop = delivery(deliveries, target, lease_s=0)
    assert await loop.sweep() == 0
    assert (await deliveries.generation(job.id)).delivered_at is None
    assert await loop.sweep() == 1
    assert target.delivered == [job.id]


async def test_two_replicas_deliver_once(service, deliveries, database):
    """Two bot replicas sweeping the same jobs deliver each result exactly once."""
    job = await submit(service)
    await finish(database, job.id, images=2)
    first, second = Target(), Target()
    await asyncio.gather(delivery(deliveries, first).sweep(), delivery(deliveries, second).sweep())
    assert first.delivered + second.delivered == [job.id]


async def test_failures_and_cancellations_are_delivered_too(service, deliveries, database):
    """Users hear about cancelled jobs through the same path as results."""
    job = await submit(service)
    await service.cancel(ALICE, job.id)
    target = Target()
    assert await delivery(deliveries, target).sweep() == 1
    assert target.delivered == [job.id]


async def test_progress_is_shown_and_throttled(service, deliveries, database):
    """Running jobs get progress updates, but not more often than the interval allows."""
    job = await submit(service)

    async def set_progress(value):
        from sqlalchemy import update

        from engine.store.models import Generation

        await database.run(
            lambda s: s.execute(
                update(Generation).where(Generation.id == job.id).values(status="running", progress=value)
            )
        )

    target = Target()
    loop = delivery(deliveries, target, progress_interval_s=3600)
    await loop.sweep()  # queued
    await set_progress(0.2)
    await loop.sweep()  # running: a new state is always shown
    await set_progress(0.6)
    await loop.sweep()  # same state within the interval: throttled
    assert target.progress == [(job.id, "queued", 0.0), (job.id, "running", 0.2)]


@pytest.mark.parametrize("status", [GenerationStatus.DONE])
async def test_other_platforms_jobs_are_left_alone(service, deliveries, database, status):
    """A bot only delivers its own platform's jobs."""
    slack_user = Actor(Platform.SLACK, "T1", "U1")
    job = (await service.submit_imagine(slack_user, ImagineRequest("x", params=RenderParams(n=1)))).generation
    await finish(database, job.id, images=1)
    target = Target()
    assert await delivery(deliveries, target).sweep() == 0


async def test_a_backlog_is_delivered_in_bounded_sweeps(service, deliveries, database):
    """After downtime, a backlog larger than one sweep is delivered over consecutive sweeps,
    each claiming only what it delivers (nothing waits for a lease to expire)."""
    from engine.domain.types import QuotaTarget

    admin = Actor(Platform.CONSOLE, "team-1", "root", is_platform_admin=True)
    await service.set_quota(admin, QuotaTarget("user", "alice"), None)
    jobs = [await submit(service) for _ in range(105)]

    def finish_all(session):
        from sqlalchemy import update

        from engine.store.models import Generation

        session.execute(update(Generation).values(status="done"))

    await database.run(finish_all)
    target = Target()
    loop = delivery(deliveries, target)
    delivered = [await loop.sweep() for _ in range(12)]
    assert delivered == [10] * 10 + [5, 0]
    assert sorted(target.delivered) == [job.id for job in jobs]


class SlowTarget(Target):
    """A chat API that takes `seconds` per delivery (a slow upload), shared by two replicas."""

    def __init__(self, seconds: float, log: list[int]) -> None:
        super().__init__()
        self.seconds = seconds
        self.delivered = log

    async def deliver(self, job) -> None:
        await asyncio.sleep(self.seconds)
        self.delivered.append(job.id)


async def test_slow_deliveries_across_two_replicas_deliver_each_once(service, deliveries, database):
    """Two replicas working through a backlog whose deliveries take longer, together, than the
    lease: each job is delivered exactly once (the lease is renewed before and during each
    delivery, and only its holder marks the job)."""
    jobs = [await submit(service) for _ in range(16)]
    for job in jobs:
        await finish(database, job.id, images=2)
    posted: list[int] = []
    replicas = [delivery(deliveries, SlowTarget(0.15, posted), lease_s=0.6, sweep_interval_s=0.05) for _ in range(2)]
    for replica in replicas:
        await replica.start()
    try:
        async with asyncio.timeout(60):
            while not all([(await deliveries.generation(j.id)).delivered_at for j in jobs]):
                await asyncio.sleep(0.05)
    finally:
        for replica in replicas:
            await replica.stop()
    assert sorted(posted) == sorted(j.id for j in jobs)


async def test_a_replica_that_lost_its_claim_cannot_mark_the_job(service, deliveries, database):
    """A replica that stalled past its lease finds the job taken over: the new holder marks it
    delivered; the stalled one's mark is refused."""
    from sqlalchemy import update

    from engine.store.models import Generation, utcnow

    job = await submit(service)
    await finish(database, job.id, images=2)
    stalled, healthy = delivery(deliveries, Target()), delivery(deliveries, Target())
    claimed, _ = await deliveries.claim_deliveries(Platform.CONSOLE, stalled.claim)
    assert [j.id for j in claimed] == [job.id] and claimed[0].delivery_attempts == 1

    def lease_runs_out(session):
        session.execute(
            update(Generation)
            .where(Generation.id == job.id)
            .values(delivery_claimed_at=utcnow() - timedelta(minutes=5))
        )

    await database.run(lease_runs_out)
    assert await healthy.sweep() == 1
    assert healthy.target.delivered == [job.id]
    assert await deliveries.renew_delivery(job.id, stalled.claim) is False
    assert await deliveries.mark_delivered(job.id, stalled.claim) is False
    assert (await deliveries.generation(job.id)).delivery_attempts == 2


async def test_claimed_jobs_are_returned_whatever_else_is_active(service, deliveries, database):
    """Jobs claimed in a sweep all come back to be delivered, however many active jobs with lower
    ids there are (they once pushed claimed ones out of a shared, limited read)."""
    from engine.domain.types import QuotaTarget

    admin = Actor(Platform.CONSOLE, "team-1", "root", is_platform_admin=True)
    await service.set_quota(admin, QuotaTarget("user", "alice"), None)
    jobs = [await submit(service) for _ in range(15)]
    for job in jobs[-3:]:
        await finish(database, job.id, images=2)
    claimed, active = await deliveries.claim_deliveries(Platform.CONSOLE, "replica-1", limit=2)
    assert [j.id for j in claimed] == [jobs[-3].id, jobs[-2].id]
    assert [j.id for j in active] == [j.id for j in jobs[:12]]


async def test_a_delivery_cut_by_a_database_blip_is_retried_at_the_next_sweep(service, deliveries, database):
    """The database fails in the middle of a delivery: the claim is released, so the next sweep
    retries at once instead of after the lease."""
    from engine.domain.errors import StoreUnavailable

    job = await submit(service)
    await finish(database, job.id, images=2)

    class BlipTarget(Target):
        async def deliver(self, job) -> None:
            if not self.progress:
                self.progress.append("blip")
                raise StoreUnavailable()
            await super().deliver(job)

    target = BlipTarget()
    loop = delivery(deliveries, target, lease_s=3600)
    assert await loop.sweep() == 0
    assert await loop.sweep() == 1
    assert target.delivered == [job.id]


async def test_a_claim_whose_answer_was_lost_is_taken_back_at_the_next_sweep(
    service, deliveries, database, monkeypatch
):
    """The claim committed but its answer was lost (the connection dropped at COMMIT): the next
    sweep takes this replica's own claims back instead of leaving them for the lease."""
    from engine.domain.errors import StoreUnavailable

    job = await submit(service)
    await finish(database, job.id, images=2)
    target = Target()
    loop = delivery(deliveries, target, lease_s=3600)
    real_claim = deliveries.claim_deliveries

    async def claim_then_lose_the_answer(*args, **kwargs):
        await real_claim(*args, **kwargs)
        raise StoreUnavailable()

    monkeypatch.setattr(deliveries, "claim_deliveries", claim_then_lose_the_answer)
    with pytest.raises(StoreUnavailable):
        await loop.sweep()
    monkeypatch.setattr(deliveries, "claim_deliveries", real_claim)
    assert await loop.sweep() == 1
    assert target.delivered == [job.id]
    assert await delivery(deliveries, Target()).sweep() == 0  # another replica: nothing to take


class ScriptedWakeups:
    """Wake-ups that say, wake by wake, whether only progress moved (as Redis's can)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bool] = asyncio.Queue()
        self.progress_only = False

    async def start(self) -> None:
        return None

    async def wait(self, timeout: float) -> bool:
        try:
            self.progress_only = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            self.progress_only = False
            return False
        return True

    async def close(self) -> None:
        return None


async def until(condition, what: str, timeout: float = 10.0) -> None:
    """Wait for `condition()` to hold, failing with `what` after `timeout` seconds (a loaded CI
    machine makes fixed sleeps race the loop under test)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def record_claim_limits(deliveries) -> list[int]:
    """Each sweep's claim limit from now on (0: a progress-only sweep, which claims nothing)."""
    claims: list[int] = []
    claim_deliveries = deliveries.claim_deliveries

    async def counting(*args, **kwargs):
        claims.append(kwargs["limit"])
        return await claim_deliveries(*args, **kwargs)

    deliveries.claim_deliveries = counting
    return claims


async def test_progress_wake_ups_show_progress_without_claiming(service, deliveries, database):
    """A wake-up that only says a job is running shows progress without a claim (one statement
    instead of two); a finish, or the sweep interval passing, claims again — so a finished job
    whose own wake-up was lost still arrives within the interval."""
    wakeups = ScriptedWakeups()
    target = Target()
    # Long enough that no sweep turns full by the clock while the test sets up (the interval
    # is shortened below, where its passing is the point).
    loop = Delivery(deliveries, target, wakeups, sweep_interval_s=60.0)
    claims = record_claim_limits(deliveries)
    await loop.start()
    try:
        await until(lambda: len(claims) == 1, "the first sweep")  # a full one
        assert claims == [10]
        job = await submit(service)
        await finish(database, job.id, images=2)  # finished, but its wake-up is "lost"
        await wakeups.queue.put(True)  # a progress wake-up of some other job
        await until(lambda: len(claims) == 2, "the progress sweep")
        assert claims[-1] == 0 and target.delivered == []
        loop.sweep_interval_s = 0.01  # the interval passed: the next look claims it
        await wakeups.queue.put(True)
        await until(lambda: target.delivered == [job.id], "the lost finish's delivery")
        loop.sweep_interval_s = 60.0
        other = await submit(service)
        await finish(database, other.id, images=2)
        await wakeups.queue.put(False)  # its own "done" wake-up
        await until(lambda: target.delivered == [job.id, other.id], "the finished job's delivery")
    finally:
        await loop.stop()


async def test_a_finish_soon_after_a_start_is_swept_once(service, deliveries, database):
    """A progress wake-up waits `progress_delay_s` for the next one: a job that finishes within
    it (a fast render) is delivered by one full sweep, with no progress-only sweep before it; a
    start that nothing follows is still shown, by a progress-only sweep after the delay."""
    wakeups = ScriptedWakeups()
    target = Target()
    loop = Delivery(deliveries, target, wakeups, sweep_interval_s=60.0, progress_delay_s=2.0)
    claims = record_claim_limits(deliveries)
    await loop.start()
    try:
        await until(lambda: len(claims) == 1, "the first sweep")
        job = await submit(service)
        await finish(database, job.id, images=2)
        # Its "running" and "done" wake-ups, moments apart (both well within the delay, even on
        # a loaded CI machine: nothing runs between them).
        await wakeups.queue.put(True)
        await wakeups.queue.put(False)
        await until(lambda: target.delivered == [job.id], "its delivery")
        assert claims == [10, 10]  # one full sweep for both wake-ups
        await wakeups.queue.put(True)  # another job's start, and nothing after it
        await until(lambda: len(claims) == 3, "the progress sweep", timeout=10.0)
        assert claims[-1] == 0
    finally:
        await loop.stop()
