"""Message and delivery bookkeeping, for the bot's delivery side (bot/delivery.py and the
adapters' DeliveryTargets): which chat messages the bot posted for a job, so a reaction, a button
or a retried delivery finds the job again; and the leases under which replicas claim finished
jobs, so each result is delivered once. No actor asks for any of this: these are the bot's own
records, so nothing here checks a permission.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session

from engine.domain.errors import NotFound
from engine.domain.types import MessageRole, Platform
from engine.domain.views import GenerationView, MessageRef
from engine.store import repo
from engine.store.db import Database
from engine.store.models import utcnow


class Deliveries:
    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.clock = clock

    async def generation(self, generation_id: int) -> GenerationView:
        """The current state of one job (adapters use this to deliver and to show progress)."""
        return await self.db.run(self._generation, generation_id)

    def _generation(self, session: Session, generation_id: int) -> GenerationView:
        generation = repo.get_generation(session, generation_id)
        if generation is None:
            raise NotFound(f"There is no job #{generation_id}.")
        return repo.generation_view(generation)

    # --- chat messages -----------------------------------------------------------------------

    async def record_message(
        self,
        platform: Platform,
        channel_id: str,
        message_id: str,
        generation_id: int,
        image_index: int | None = None,
        role: MessageRole = MessageRole.RESULT,
    ) -> None:
        """Remember a message the bot posted so a later reaction finds its job and image."""
        await self.db.run(
            repo.record_chat_message,
            platform,
            channel_id,
            message_id,
            generation_id,
            image_index,
            role,
        )

    async def message_target(self, platform: Platform, channel_id: str, message_id: str) -> MessageRef | None:
        """The job (and image, if one) a message belongs to, if the bot posted it."""

        def find(session: Session) -> MessageRef | None:
            row = repo.find_chat_message(session, platform, channel_id, message_id)
            return repo.message_ref(row) if row else None

        return await self.db.run(find)

    async def messages_for(self, generation_id: int) -> list[MessageRef]:
        """Every message posted for a job, in the order they were recorded."""

        def find(session: Session) -> list[MessageRef]:
            return [repo.message_ref(m) for m in repo.chat_messages_for(session, generation_id)]

        return await self.db.run(find)

    # --- delivery ----------------------------------------------------------------------------

    async def claim_deliveries(
        self,
        platform: Platform,
        claim: str,
        lease_s: float = 30.0,
        active_since: datetime | None = None,
        limit: int = 10,
        reclaim: bool = False,
    ) -> tuple[list[GenerationView], list[GenerationView]]:
        """(finished jobs now claimed for delivery under `claim` — with `reclaim`, also those it
        already held — and queued/running jobs changed since `active_since`, or all of them)."""

        def claim_rows(session: Session) -> tuple[list[GenerationView], list[GenerationView]]:
            claimed, active = repo.claim_deliveries(
                session,
                platform,
                self.clock(),
                lease_s,
                claim,
                active_since=active_since,
                limit=limit,
                reclaim=reclaim,
            )
            return ([repo.generation_view(g) for g in claimed], [repo.generation_view(g) for g in active])

        # The claim is one UPDATE, atomic by itself; the read after it needs no transaction
        # around the two (what it claimed is final and now this replica's to deliver).
        return await self.db.run_autocommit(claim_rows)

    async def renew_delivery(self, generation_id: int, claim: str) -> bool:
        """Extend a delivery lease; False if it is not this claim's any more."""
        return await self.db.run_autocommit(repo.renew_delivery, generation_id, claim, self.clock())

    async def release_delivery(self, generation_id: int, claim: str) -> bool:
        """Give a delivery claim up now, so the next sweep retries without waiting for the lease."""
        return await self.db.run(repo.release_delivery, generation_id, claim)

    async def mark_delivered(self, generation_id: int, claim: str | None = None) -> bool:
        """Mark a job delivered (under `claim`, when given); False if that claim had passed."""
        return await self.db.run_autocommit(repo.mark_delivered, generation_id, self.clock(), claim)
