"""Wake-ups from workers to bots: "job N changed". The job row is the truth; a wake-up only
says when to look. Redis pub/sub where Redis is available, polling otherwise — and always an
in-process signal, so a worker embedded in the bot's process (the console) wakes it at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from typing import Protocol

log = logging.getLogger(__name__)

CHANNEL = "imagine:jobs"

_local_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
_local_lock = threading.Lock()


def wake_local() -> None:
    """Wake every waiter in this process (thread-safe: workers call it from their thread)."""
    with _local_lock:
        waiters = list(_local_waiters)
    for loop, event in waiters:
        with contextlib.suppress(RuntimeError):  # that loop is closed
            loop.call_soon_threadsafe(event.set)


class Publisher(Protocol):
    def publish(self, generation_id: int, status: str, progress: float) -> None: ...


class LocalPublisher:
    """Wake waiters in this process only; bots elsewhere find changes by polling."""

    def publish(self, generation_id: int, status: str, progress: float) -> None:
        wake_local()


class RedisPublisher:
    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def publish(self, generation_id: int, status: str, progress: float) -> None:
        wake_local()
        message = json.dumps({"id": generation_id, "status": status, "progress": progress})
        try:
            self._redis.publish(CHANNEL, message)
        except Exception as error:  # noqa: BLE001 - a lost wake-up only delays delivery to the next sweep
            log.warning("job %s: wake-up not published: %s", generation_id, error)


def make_publisher(url: str | None) -> Publisher:
    return RedisPublisher(url) if url else LocalPublisher()


class Wakeups(Protocol):
    #: After `wait` returned True: whether every wake-up since the previous wait only said an
    #: active job (queued or running) moved on — no job finished. False when it cannot tell.
    progress_only: bool

    async def start(self) -> None: ...

    async def wait(self, timeout: float) -> bool:
        """Return True when woken by an event, False when `timeout` passed."""

    async def close(self) -> None: ...


#: The statuses a wake-up may carry without any job having finished.
PROGRESS_STATUSES = frozenset({"queued", "running"})


class PollingWakeups:
    """Wake every `interval` seconds, or at once when a worker in this process publishes."""

    progress_only = False  # an in-process signal does not say what changed

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._event = asyncio.Event()
        self._key: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    async def start(self) -> None:
        self._key = (asyncio.get_running_loop(), self._event)
        with _local_lock:
            _local_waiters.add(self._key)

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._event.wait(), timeout=min(timeout, self.interval))
        except TimeoutError:
            return False
        self._event.clear()
        return True

    async def close(self) -> None:
        if self._key is not None:
            with _local_lock:
                _local_waiters.discard(self._key)
            self._key = None


class RedisWakeups:
    """Subscribe to the workers' channel; subscribe before enqueueing so no event is missed."""

    def __init__(self, url: str, fallback_interval: float = 5.0) -> None:
        self.url = url
        self.fallback_interval = fallback_interval
        self._event = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self.progress_only = False
        self._finished = False  # a wake-up since the last wait said (or may have said) a job ended

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="imagine-wakeups")
        try:
            await asyncio.wait_for(self._ready.wait(), timeout=5)
        except TimeoutError:
            log.warning("Redis wake-ups not ready: falling back to polling every %.1fs", self.fallback_interval)

    async def _listen(self) -> None:
        import redis.asyncio as aioredis

        while True:
            try:
                client = aioredis.Redis.from_url(self.url)
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    self._ready.set()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            if _status(message.get("data")) not in PROGRESS_STATUSES:
                                self._finished = True
                            self._event.set()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - reconnect; sweeps keep delivering meanwhile
                log.warning("Redis wake-up subscription lost (%s); retrying in 1 s", error)
                self._finished = True
                self._event.set()  # look once now, in case something was missed
                await asyncio.sleep(1)

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._event.wait(), timeout=min(timeout, self.fallback_interval))
        except TimeoutError:
            self.progress_only = False
            return False
        self._event.clear()
        self.progress_only = not self._finished
        self._finished = False
        return True

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # however the task ended, it is over
                await self._task


def _status(data: object) -> str | None:
    """The status a worker's wake-up carries; None if it cannot be read."""
    try:
        status = json.loads(data).get("status")  # type: ignore[arg-type]
    except (TypeError, ValueError, AttributeError):
        return None
    return status if isinstance(status, str) else None


def make_wakeups(url: str | None, poll_interval: float) -> Wakeups:
    return RedisWakeups(url) if url else PollingWakeups(poll_interval)
