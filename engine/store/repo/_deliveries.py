"""What the bots' delivery side keeps: delivery claims (leases on finished jobs) and the chat
messages posted for jobs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, bindparam, select, update
from sqlalchemy.orm import Session, joinedload

from engine.domain.types import ACTIVE_STATUSES, FINAL_STATUSES, MessageRole, Platform
from engine.store.db import rowcount
from engine.store.models import ChatMessage, Generation, UTCDateTime, utcnow
from engine.store.repo._insert import insert_ignore

# --- delivery claims -------------------------------------------------------------------------

G = cast(Table, Generation.__table__)  # the generations table, for Core statements


#: Active jobs shown per sweep (progress is best effort; the rest show on later sweeps).
ACTIVE_LIMIT = 100


def claim_deliveries(
    session: Session,
    platform: Platform,
    now: datetime,
    lease_s: float,
    claim: str,
    *,
    active_since: datetime | None = None,
    limit: int = 10,
    reclaim: bool = False,
) -> tuple[Sequence[Generation], Sequence[Generation]]:
    """Claim up to `limit` of this platform's finished, undelivered jobs for the replica whose
    token is `claim`, and list its active ones (only those changed since `active_since`, when
    given): one UPDATE … RETURNING, atomic by itself, then one SELECT of both.

    A claim is a lease: the holder renews it while it delivers (`renew_delivery`) and only the
    holder can mark the job delivered. A replica that dies (or whose delivery fails) leaves a
    claim that goes stale after `lease_s`, and the next sweep of any replica takes it over — with
    `delivery_attempts` > 1, so the adapter checks what the first attempt already posted.
    With `reclaim`, jobs already under this claim count as claimable too: the replica's last
    claim may have committed although its answer was lost (a connection dropped at COMMIT).
    Returns (claimed finished jobs, queued/running jobs).
    """
    parameters = {
        "for_platform": str(platform),
        "now": now,
        "stale_before": now - timedelta(seconds=lease_s),
        "claim": claim,
        "limit": limit,
    }
    # limit 0: only the active jobs (the sweep knows no job finished since its last look).
    claimed_ids = set(session.scalars(_claim_statement(reclaim), parameters).all()) if limit > 0 else set()
    read = _claimed_and_active_statement(bool(claimed_ids), active_since is not None)
    rows = (
        session.scalars(
            read,
            {"for_platform": str(platform), "claimed": list(claimed_ids), "active_since": active_since},
        )
        .unique()
        .all()
    )
    claimed = [row for row in rows if row.id in claimed_ids]
    active = [row for row in rows if row.id not in claimed_ids]
    return claimed, active


# The sweep's statements, built once per variant (every value is a parameter): building them
# anew, with an entity of this many columns, cost more of the bot's CPU than running them.
# The UPDATEs name the table, not the entity: an ORM-enabled UPDATE goes through the ORM's bulk
# persistence: 0.7 ms of CPU per delivery claim here, for statements that return ids or a row
# count (bench/db_steps.py).
_CLAIM: dict[bool, Any] = {}
_READ: dict[tuple[bool, bool], Any] = {}


def _claim_statement(reclaim: bool) -> Any:
    """UPDATE … RETURNING id: claim up to :limit finished, undelivered jobs of :for_platform."""
    if reclaim not in _CLAIM:
        now = bindparam("now", type_=UTCDateTime())
        free = G.c.delivery_claimed_at.is_(None) | (
            G.c.delivery_claimed_at <= bindparam("stale_before", type_=UTCDateTime())
        )
        if reclaim:
            free = free | (G.c.delivery_claim == bindparam("claim"))
        claimable = (
            (G.c.platform == bindparam("for_platform"))
            & G.c.delivered_at.is_(None)
            & G.c.status.in_([str(s) for s in FINAL_STATUSES])
            & free
        )
        # The conditions are checked again by the UPDATE itself, row by row under its lock, so
        # two replicas picking the same candidates still claim each job once.
        candidates = select(G.c.id).where(claimable).order_by(G.c.id).limit(bindparam("limit"))
        _CLAIM[reclaim] = (
            update(G)
            .where(G.c.id.in_(candidates.scalar_subquery()), claimable)
            .values(
                delivery_claimed_at=now,
                delivery_claim=bindparam("claim"),
                delivery_attempts=G.c.delivery_attempts + 1,
            )
            .returning(G.c.id)
        )
    return _CLAIM[reclaim]


def _claimed_and_active_statement(claimed: bool, since: bool) -> Any:
    """The claimed jobs (:claimed) and :for_platform's active ones (changed since :active_since,
    when given), with their images, in one SELECT.

    Each side is chosen by its own condition: ordered by id and limited as a whole, active
    jobs with lower ids would push claimed ones out of the result (claimed, never delivered
    until their lease ran out), so only the active side is limited."""
    key = (claimed, since)
    if key not in _READ:
        active_filter: ColumnElement[bool] = Generation.status.in_([str(s) for s in ACTIVE_STATUSES])
        if since:
            active_filter = active_filter & (Generation.updated_at >= bindparam("active_since", type_=UTCDateTime()))
        active_ids = (
            select(Generation.id)
            .where(Generation.platform == bindparam("for_platform"), Generation.delivered_at.is_(None), active_filter)
            .order_by(Generation.id)
            .limit(ACTIVE_LIMIT)
        )
        wanted: ColumnElement[bool] = Generation.id.in_(active_ids.scalar_subquery())
        if claimed:
            wanted = Generation.id.in_(bindparam("claimed", expanding=True)) | wanted
        # The images in the same statement (a join, not the second SELECT the relationship's
        # default loader would send).
        _READ[key] = select(Generation).where(wanted).options(joinedload(Generation.images)).order_by(Generation.id)
    return _READ[key]


def renew_delivery(session: Session, generation_id: int, claim: str, now: datetime) -> bool:
    """Extend this replica's delivery lease; False if the claim passed to another replica (or
    the job was delivered meanwhile)."""
    result = session.execute(
        update(G)
        .where(G.c.id == generation_id, G.c.delivery_claim == claim, G.c.delivered_at.is_(None))
        .values(delivery_claimed_at=now, updated_at=G.c.updated_at)
    )
    return rowcount(result) == 1


def release_delivery(session: Session, generation_id: int, claim: str) -> bool:
    """Give up this replica's claim at once (the next sweep of any replica takes the job)."""
    result = session.execute(
        update(G)
        .where(G.c.id == generation_id, G.c.delivery_claim == claim, G.c.delivered_at.is_(None))
        .values(delivery_claimed_at=None, updated_at=G.c.updated_at)
    )
    return rowcount(result) == 1


def mark_delivered(session: Session, generation_id: int, now: datetime, claim: str | None = None) -> bool:
    """Mark a job delivered — only under the given claim, when one is given. False if the job
    was not this claim's any more (another replica took it over) or was already delivered."""
    result = session.execute(
        _mark_statement(claim is not None), {"generation_id": generation_id, "now": now, "claim": claim}
    )
    return rowcount(result) == 1


_MARK: dict[bool, Any] = {}


def _mark_statement(claimed: bool) -> Any:
    """mark_delivered's UPDATE, built once per variant."""
    if claimed not in _MARK:
        condition = (G.c.id == bindparam("generation_id")) & G.c.delivered_at.is_(None)
        if claimed:
            condition = condition & (G.c.delivery_claim == bindparam("claim"))
        _MARK[claimed] = update(G).where(condition).values(delivered_at=bindparam("now", type_=UTCDateTime()))
    return _MARK[claimed]


# --- chat messages ---------------------------------------------------------------------------


def record_chat_message(
    session: Session,
    platform: Platform,
    channel_id: str,
    message_id: str,
    generation_id: int,
    image_index: int | None,
    role: MessageRole,
) -> None:
    insert_ignore(
        session,
        ChatMessage,
        {
            "platform": str(platform),
            "channel_id": channel_id,
            "message_id": message_id,
            "generation_id": generation_id,
            "image_index": image_index,
            "role": str(role),
            "created_at": utcnow(),
        },
        ["platform", "channel_id", "message_id"],
    )


def find_chat_message(session: Session, platform: Platform, channel_id: str, message_id: str) -> ChatMessage | None:
    return session.scalar(
        select(ChatMessage).where(
            ChatMessage.platform == str(platform),
            ChatMessage.channel_id == channel_id,
            ChatMessage.message_id == message_id,
        )
    )


def chat_messages_for(session: Session, generation_id: int) -> Sequence[ChatMessage]:
    return session.scalars(
        select(ChatMessage).where(ChatMessage.generation_id == generation_id).order_by(ChatMessage.id)
    ).all()
