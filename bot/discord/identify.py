"""Discord's identify limit, kept across every process of the bot.

Discord accepts `max_concurrency` IDENTIFYs per 5 seconds (its value comes with /gateway/bot):
shard `s` is in bucket `s % max_concurrency`, and each bucket takes one IDENTIFY per 5 s. With
the shards spread over several processes (a StatefulSet), two of them starting at once must
still not identify two shards of one bucket within 5 s, so the gate is a Redis key per bucket
(`SET … NX PX 5500`) when Redis is configured; without Redis (one process) it is a clock per
bucket in memory. discord.py's own hook simply sleeps 5 s before every IDENTIFY but the first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger(__name__)

WINDOW_S = 5.5  # Discord's 5 s, with a margin for clocks and latency
POLL_S = 0.25


class IdentifyGate:
    def __init__(self, redis_url: str | None = None) -> None:
        self.redis_url = redis_url
        self._redis: aioredis.Redis | None = None
        self._last: dict[int, float] = {}
        self._lock = asyncio.Lock()

    async def wait(self, shard_id: int, max_concurrency: int) -> None:
        """Return when shard `shard_id` may IDENTIFY (and hold its bucket for the window)."""
        bucket = shard_id % max(1, max_concurrency)
        if self.redis_url:
            try:
                await self._wait_redis(bucket, self.redis_url)
                return
            except Exception as error:  # noqa: BLE001 - Redis down: fall back to this process's clock
                log.warning("identify gate: Redis unavailable (%s); pacing this process only", error)
        async with self._lock:
            wait = self._last.get(bucket, 0.0) + WINDOW_S - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last[bucket] = time.monotonic()

    async def _wait_redis(self, bucket: int, redis_url: str) -> None:
        if self._redis is None:
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(redis_url, socket_timeout=3, socket_connect_timeout=3)
        key = f"imagine:discord:identify:{bucket}"
        while not await self._redis.set(key, "1", nx=True, px=int(WINDOW_S * 1000)):
            await asyncio.sleep(POLL_S)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
