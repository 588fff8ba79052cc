"""Wake-ups over Redis: what a wait tells the delivery loop about what changed."""

from __future__ import annotations

import asyncio

from engine.notify import RedisPublisher, RedisWakeups
from tests.conftest import REDIS_URL, require


async def test_redis_wake_ups_say_whether_only_progress_moved():
    """Running and queued jobs' wake-ups are progress only; a finish, or a message that cannot
    be read, is not — and one finish among progress wake-ups makes the whole wait "not only
    progress", so the loop then claims."""
    require("redis")
    wakeups = RedisWakeups(REDIS_URL)
    publisher = RedisPublisher(REDIS_URL)
    await wakeups.start()
    try:

        async def woken_by(*statuses: str) -> bool:
            for status in statuses:
                await asyncio.to_thread(publisher.publish, 1, status, 0.5)
            await asyncio.sleep(0.2)  # every message has arrived
            assert await wakeups.wait(5)
            return wakeups.progress_only

        assert await woken_by("running") is True
        assert await woken_by("running", "queued") is True
        assert await woken_by("running", "done", "running") is False
        assert await woken_by("failed") is False
        assert await woken_by("running") is True
        await asyncio.to_thread(publisher._redis.publish, "imagine:jobs", b"not json")
        await asyncio.sleep(0.2)
        assert await wakeups.wait(5) and wakeups.progress_only is False
        assert not await wakeups.wait(0.05) and wakeups.progress_only is False
    finally:
        await wakeups.close()
