"""Platform event ids already handled (Slack retries an event; replicas share this table)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.orm import Session

from engine.domain.types import Platform
from engine.store.db import rowcount
from engine.store.models import ProcessedEvent
from engine.store.repo._insert import dialect_insert


def remember_event(session: Session, platform: Platform, event_id: str, now: datetime) -> bool:
    """Record a platform event id; False if it was recorded before (by any replica)."""
    inserted = session.execute(
        dialect_insert(session)(ProcessedEvent)
        .values(platform=str(platform), event_id=event_id, created_at=now)
        .on_conflict_do_nothing(index_elements=["platform", "event_id"])
        .returning(ProcessedEvent.id)
    ).first()
    return inserted is not None


def forget_events_before(session: Session, cutoff: datetime) -> int:
    """Drop event ids recorded before `cutoff`; returns how many."""
    return rowcount(session.execute(delete(ProcessedEvent).where(ProcessedEvent.created_at < cutoff)))
