"""Platform event ids already handled, for the Slack adapter: Slack retries an event it thinks
was lost, and a replayed request must not act twice, on whichever replica it reaches.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from engine.domain.types import Platform
from engine.store import repo
from engine.store.db import Database
from engine.store.models import utcnow


class ProcessedEvents:
    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.clock = clock

    async def first_time(self, platform: Platform, event_id: str) -> bool:
        """Record a platform event id; False if it was seen before (a retry: do nothing)."""
        return await self.db.run(repo.remember_event, platform, event_id, self.clock())

    async def forget_events_before(self, cutoff: datetime) -> int:
        """Drop remembered event ids older than any retry can be (Slack retries for minutes)."""
        return await self.db.run(repo.forget_events_before, cutoff)
