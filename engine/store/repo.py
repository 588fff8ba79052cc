"""Repository functions: every query imagine-bot runs, each taking a sync Session.

The service calls these through `Database.run` (async bots); the worker calls them directly.
They never commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, lazyload

from engine.domain.limits import MAX_ID
from engine.domain.quota import PolicyRule, effective_limit, period_end, period_start
from engine.domain.types import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    Actor,
    GenerationKind,
    GenerationStatus,
    MessageRole,
    Platform,
)
from engine.domain.views import GenerationView, ImageView, MessageRef, QuotaStatus
from engine.store.models import (
    AuditLogEntry,
    Ban,
    BlockedTerm,
    ChatMessage,
    Generation,
    Image,
    ProcessedEvent,
    QuotaLedgerEntry,
    QuotaPolicy,
    QuotaUsage,
    Team,
    User,
    utcnow,
)


def _insert(session: Session):
    """The dialect's INSERT (both have ON CONFLICT, which the generic one lacks)."""
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def _insert_ignore(session: Session, model: type, values: dict[str, Any], keys: list[str]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING: safe when many requests create the same row at once."""
    session.execute(_insert(session)(model).values(**values).on_conflict_do_nothing(index_elements=keys))


# --- teams and users -------------------------------------------------------------------------


def ensure_team(session: Session, platform: str, external_id: str, name: str = "") -> Team:
    team = session.scalar(
        select(Team).where(Team.platform == platform, Team.external_id == external_id)
    )
    if team is None:
        _insert_ignore(
            session,
            Team,
            {"platform": platform, "external_id": external_id, "name": name,
             "moderator_role_ids": [], "created_at": utcnow()},
            ["platform", "external_id"],
        )
        team = session.scalars(
            select(Team).where(Team.platform == platform, Team.external_id == external_id)
        ).one()
    elif name and team.name != name:
        team.name = name
    return team


def ensure_user(session: Session, team: Team, external_id: str, name: str = "") -> User:
    user = session.scalar(
        select(User).where(User.team_id == team.id, User.external_id == external_id)
    )
    if user is None:
        _insert_ignore(
            session,
            User,
            {"team_id": team.id, "external_id": external_id, "display_name": name,
             "created_at": utcnow()},
            ["team_id", "external_id"],
        )
        user = session.scalars(
            select(User).where(User.team_id == team.id, User.external_id == external_id)
        ).one()
    elif name and user.display_name != name:
        user.display_name = name
    return user


def ensure_actor(session: Session, actor: Actor) -> tuple[Team, User]:
    """The actor's team and user rows, created on first sight (one query when both exist)."""
    user = session.scalar(
        select(User)
        .join(User.team)
        .where(Team.platform == str(actor.platform), Team.external_id == actor.team_id,
               User.external_id == actor.user_id)
    )
    if user is None:
        team = ensure_team(session, str(actor.platform), actor.team_id, actor.team_name)
        return team, ensure_user(session, team, actor.user_id, actor.user_name)
    if actor.team_name and user.team.name != actor.team_name:
        user.team.name = actor.team_name
    if actor.user_name and user.display_name != actor.user_name:
        user.display_name = actor.user_name
    return user.team, user


def find_user(session: Session, team: Team, external_id: str) -> User | None:
    return session.scalar(
        select(User).where(User.team_id == team.id, User.external_id == external_id)
    )


# --- moderation lookups ----------------------------------------------------------------------


def find_ban(session: Session, team: Team, user_external_id: str) -> Ban | None:
    return session.scalar(
        select(Ban).where(Ban.team_id == team.id, Ban.user_external_id == user_external_id)
    )


def blocked_terms(session: Session, team: Team) -> list[str]:
    return list(
        session.scalars(
            select(BlockedTerm.term).where(BlockedTerm.team_id == team.id).order_by(BlockedTerm.term)
        )
    )


def remove_blocked_term(session: Session, team: Team, term: str) -> bool:
    """Unblock a (normalised) term; False if it was not blocked."""
    result = session.execute(
        delete(BlockedTerm).where(BlockedTerm.team_id == team.id, BlockedTerm.term == term)
    )
    return result.rowcount != 0


def audit_entries(session: Session, team: Team, limit: int) -> Sequence[AuditLogEntry]:
    """The team's most recent moderator actions, newest first."""
    return session.scalars(
        select(AuditLogEntry)
        .where(AuditLogEntry.team_id == team.id)
        .order_by(AuditLogEntry.id.desc())
        .limit(limit)
    ).all()


# --- quota -----------------------------------------------------------------------------------


def policy_rules(session: Session, team: Team) -> list[PolicyRule]:
    rows = session.scalars(select(QuotaPolicy).where(QuotaPolicy.team_id == team.id))
    return [
        PolicyRule(r.scope, r.subject, r.daily_limit, r.unlimited, r.bonus, r.bonus_day, r.reset_at)
        for r in rows
    ]


def find_policy(session: Session, team: Team, scope: str, subject: str) -> QuotaPolicy | None:
    return session.scalar(
        select(QuotaPolicy).where(
            QuotaPolicy.team_id == team.id, QuotaPolicy.scope == scope, QuotaPolicy.subject == subject
        )
    )


def lock_usage(session: Session, team: Team, user: User, now: datetime) -> QuotaUsage:
    """The user's usage row for the current period, created if needed and locked for update."""
    start = period_start(now)
    insert = _insert(session)
    # One statement creates the row or, if it exists, "updates" it to itself: either way the
    # row comes back locked, which serialises concurrent debits by one user on PostgreSQL
    # (on SQLite the transaction already holds the write lock: BEGIN IMMEDIATE).
    statement = (
        insert(QuotaUsage)
        .values(team_id=team.id, user_id=user.id, period_start=start, used=0, granted=0)
        .on_conflict_do_update(
            index_elements=["user_id", "period_start"], set_={"used": QuotaUsage.used}
        )
        .returning(QuotaUsage)
    )
    return session.scalars(
        statement, execution_options={"populate_existing": True}
    ).one()


def ledger(
    session: Session,
    usage: QuotaUsage,
    kind: str,
    amount: int,
    reason: str,
    *,
    generation_id: int | None = None,
    actor_id: int | None = None,
) -> None:
    """Write down one change to a user's usage (debit, refund, grant, reset) and why."""
    session.add(
        QuotaLedgerEntry(
            team_id=usage.team_id,
            user_id=usage.user_id,
            generation_id=generation_id,
            period_start=usage.period_start,
            kind=kind,
            amount=amount,
            reason=reason,
            actor_id=actor_id,
        )
    )


def apply_role_reset(session: Session, usage: QuotaUsage, reset_at: datetime | None) -> None:
    """Apply a role-wide reset a moderator made since this row last looked."""
    if reset_at is None or (usage.reset_applied_at and usage.reset_applied_at >= reset_at):
        return
    if usage.used:
        ledger(session, usage, "reset", usage.used, "role quota reset by a moderator")
    usage.used = 0
    usage.reset_applied_at = reset_at


def quota_status(
    session: Session, team: Team, user: User, role_ids: tuple[str, ...], default_limit: int,
    now: datetime, *, lock: bool = False,
) -> tuple[QuotaStatus, QuotaUsage | None]:
    limit = effective_limit(
        policy_rules(session, team),
        user_id=user.external_id,
        role_ids=role_ids,
        default_limit=default_limit,
        now=now,
    )
    if lock:
        usage = lock_usage(session, team, user, now)
        apply_role_reset(session, usage, limit.reset_at)
        used, granted = usage.used, usage.granted
    else:
        usage = session.scalar(
            select(QuotaUsage).where(
                QuotaUsage.user_id == user.id, QuotaUsage.period_start == period_start(now)
            )
        )
        used = usage.used if usage else 0
        granted = usage.granted if usage else 0
        if usage and limit.reset_at and (
            usage.reset_applied_at is None or usage.reset_applied_at < limit.reset_at
        ):
            used = 0  # a role reset not yet applied to this row
    remaining = None
    if limit.limit is not None:
        remaining = max(0, limit.limit + limit.bonus + granted - used)
    status = QuotaStatus(
        limit=limit.limit,
        used=used,
        granted=granted + limit.bonus,
        remaining=remaining,
        period_start=period_start(now),
        resets_at=period_end(now),
        source=limit.source,
    )
    return status, usage


def debit(
    session: Session, usage: QuotaUsage, generation: Generation, cost: int, reason: str
) -> None:
    usage.used += cost
    ledger(session, usage, "debit", cost, reason, generation_id=generation.id)


def refund(session: Session, generation: Generation, reason: str) -> int:
    """Give back what a job was charged; returns the images refunded (0 if already refunded)."""
    entries = session.scalars(
        select(QuotaLedgerEntry).where(QuotaLedgerEntry.generation_id == generation.id)
    ).all()
    charged = next((e for e in entries if e.kind == "debit"), None)
    if charged is None or any(e.kind == "refund" for e in entries):
        return 0
    usage = session.scalars(
        select(QuotaUsage)
        .where(QuotaUsage.user_id == charged.user_id, QuotaUsage.period_start == charged.period_start)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    # A moderator reset after the debit may already have zeroed the usage: never go below 0.
    amount = min(charged.amount, usage.used)
    usage.used -= amount
    ledger(session, usage, "refund", amount, reason, generation_id=generation.id)
    return amount


# --- generations -----------------------------------------------------------------------------


def get_generation(
    session: Session, generation_id: int, *, lock: bool = False, images: bool = True
) -> Generation | None:
    if not 1 <= generation_id <= MAX_ID:
        return None  # no such row can exist (and PostgreSQL would refuse the comparison)
    query = select(Generation).where(Generation.id == generation_id)
    if lock:
        query = query.with_for_update(of=Generation).execution_options(populate_existing=True)
    if not images:
        query = query.options(lazyload(Generation.images))
    return session.scalars(query).unique().one_or_none()


def latest_generation(session: Session, user: User, *, done_only: bool = False) -> Generation | None:
    query = select(Generation).where(Generation.requester_id == user.id)
    if done_only:
        query = query.where(Generation.status == str(GenerationStatus.DONE))
    return session.scalars(query.order_by(Generation.id.desc()).limit(1)).unique().one_or_none()


def queue_position(session: Session, generation: Generation) -> int:
    """1 + the number of queued or running jobs ahead of this one."""
    ahead = session.scalar(
        select(func.count())
        .select_from(Generation)
        .where(
            Generation.status.in_([GenerationStatus.QUEUED, GenerationStatus.RUNNING]),
            Generation.id < generation.id,
        )
    )
    return int(ahead or 0) + 1


def user_generations(
    session: Session, user: User, *, offset: int, limit: int
) -> tuple[Sequence[Generation], int]:
    total = session.scalar(
        select(func.count()).select_from(Generation).where(Generation.requester_id == user.id)
    )
    rows = session.scalars(
        select(Generation)
        .where(Generation.requester_id == user.id)
        .order_by(Generation.id.desc())
        .offset(offset)
        .limit(limit)
    ).unique().all()
    return rows, int(total or 0)


def thread_members(session: Session, root_id: int) -> Sequence[Generation]:
    return session.scalars(
        select(Generation)
        .where((Generation.id == root_id) | (Generation.thread_root_id == root_id))
        .order_by(Generation.id)
    ).unique().all()


def team_generations(
    session: Session, team_id: int, *, words: Sequence[str] = (), user_external_id: str | None = None,
    limit: int,
) -> Sequence[Generation]:
    """A team's finished jobs, newest first: only those whose prompt contains every word (in
    any case), and only one user's, when given."""
    query = (
        select(Generation)
        .where(Generation.team_id == team_id, Generation.status == str(GenerationStatus.DONE))
        .order_by(Generation.id.desc())
        .limit(limit)
    )
    for word in words:
        query = query.where(Generation.prompt.ilike(f"%{_escape_like(word)}%", escape="\\"))
    if user_external_id is not None:
        query = query.join(User, Generation.requester_id == User.id).where(
            User.external_id == user_external_id
        )
    return session.scalars(query).unique().all()


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def team_jobs_since(session: Session, team: Team, since: datetime) -> Sequence[Row]:
    """(status, cost, error, requester_role_ids, display_name, external_id) of each of a team's
    jobs created since `since`, for statistics."""
    return session.execute(
        select(Generation.status, Generation.cost, Generation.error,
               Generation.requester_role_ids, User.display_name, User.external_id)
        .join(User, Generation.requester_id == User.id)
        .where(Generation.team_id == team.id, Generation.created_at >= since)
    ).all()


#: Active jobs shown per sweep (progress is best effort; the rest show on later sweeps).
ACTIVE_LIMIT = 100


def claim_deliveries(
    session: Session, platform: Platform, now: datetime, lease_s: float, claim: str, *,
    active_since: datetime | None = None, limit: int = 10, reclaim: bool = False,
) -> tuple[Sequence[Generation], Sequence[Generation]]:
    """Claim up to `limit` of this platform's finished, undelivered jobs for the replica whose
    token is `claim`, and list its active ones (only those changed since `active_since`, when
    given), in one transaction.

    A claim is a lease: the holder renews it while it delivers (`renew_delivery`) and only the
    holder can mark the job delivered. A replica that dies (or whose delivery fails) leaves a
    claim that goes stale after `lease_s`, and the next sweep of any replica takes it over — with
    `delivery_attempts` > 1, so the adapter checks what the first attempt already posted.
    With `reclaim`, jobs already under this claim count as claimable too: the replica's last
    claim may have committed although its answer was lost (a connection dropped at COMMIT).
    Returns (claimed finished jobs, queued/running jobs).
    """
    free = (Generation.delivery_claimed_at.is_(None)
            | (Generation.delivery_claimed_at <= now - timedelta(seconds=lease_s)))
    if reclaim:
        free = free | (Generation.delivery_claim == claim)
    claimable = (
        (Generation.platform == str(platform))
        & Generation.delivered_at.is_(None)
        & Generation.status.in_([str(s) for s in FINAL_STATUSES])
        & free
    )
    # The conditions are checked again by the UPDATE itself, row by row under its lock, so two
    # replicas picking the same candidates still claim each job once.
    candidates = select(Generation.id).where(claimable).order_by(Generation.id).limit(limit)
    claimed_ids = set(session.scalars(
        update(Generation)
        .where(Generation.id.in_(candidates.scalar_subquery()), claimable)
        .values(delivery_claimed_at=now, delivery_claim=claim,
                delivery_attempts=Generation.delivery_attempts + 1)
        .returning(Generation.id)
        .execution_options(synchronize_session=False)
    ).all())
    # Two reads: with one, ordered by id and limited, active jobs with lower ids pushed claimed
    # ones out of the result — claimed, never delivered until their lease ran out.
    claimed = session.scalars(
        select(Generation).where(Generation.id.in_(claimed_ids)).order_by(Generation.id)
    ).unique().all() if claimed_ids else []
    active_filter = Generation.status.in_([str(s) for s in ACTIVE_STATUSES])
    if active_since is not None:
        active_filter = active_filter & (Generation.updated_at >= active_since)
    active = session.scalars(
        select(Generation)
        .where(Generation.platform == str(platform), Generation.delivered_at.is_(None), active_filter)
        .order_by(Generation.id)
        .limit(ACTIVE_LIMIT)
    ).unique().all()
    return claimed, active


def renew_delivery(session: Session, generation_id: int, claim: str, now: datetime) -> bool:
    """Extend this replica's delivery lease; False if the claim passed to another replica (or
    the job was delivered meanwhile)."""
    result = session.execute(
        update(Generation)
        .where(Generation.id == generation_id, Generation.delivery_claim == claim,
               Generation.delivered_at.is_(None))
        .values(delivery_claimed_at=now, updated_at=Generation.updated_at)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def release_delivery(session: Session, generation_id: int, claim: str) -> bool:
    """Give up this replica's claim at once (the next sweep of any replica takes the job)."""
    result = session.execute(
        update(Generation)
        .where(Generation.id == generation_id, Generation.delivery_claim == claim,
               Generation.delivered_at.is_(None))
        .values(delivery_claimed_at=None, updated_at=Generation.updated_at)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def mark_delivered(session: Session, generation_id: int, now: datetime, claim: str | None = None) -> bool:
    """Mark a job delivered — only under the given claim, when one is given. False if the job
    was not this claim's any more (another replica took it over) or was already delivered."""
    condition = (Generation.id == generation_id) & Generation.delivered_at.is_(None)
    if claim is not None:
        condition = condition & (Generation.delivery_claim == claim)
    result = session.execute(
        update(Generation)
        .where(condition)
        .values(delivered_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def get_image(session: Session, image_id: int) -> Image | None:
    if not 1 <= image_id <= MAX_ID:
        return None  # no such row can exist (and PostgreSQL would refuse the comparison)
    return session.get(Image, image_id)


def find_image(session: Session, generation_id: int, index: int) -> Image | None:
    return session.scalar(
        select(Image).where(Image.generation_id == generation_id, Image.index == index)
    )


def record_chat_message(
    session: Session,
    platform: Platform,
    channel_id: str,
    message_id: str,
    generation_id: int,
    image_index: int | None,
    role: MessageRole,
) -> None:
    _insert_ignore(
        session,
        ChatMessage,
        {
            "platform": str(platform), "channel_id": channel_id, "message_id": message_id,
            "generation_id": generation_id, "image_index": image_index, "role": str(role),
            "created_at": utcnow(),
        },
        ["platform", "channel_id", "message_id"],
    )


def find_chat_message(
    session: Session, platform: Platform, channel_id: str, message_id: str
) -> ChatMessage | None:
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


# --- platform events -------------------------------------------------------------------------


def remember_event(session: Session, platform: Platform, event_id: str, now: datetime) -> bool:
    """Record a platform event id; False if it was recorded before (by any replica)."""
    inserted = session.execute(
        _insert(session)(ProcessedEvent)
        .values(platform=str(platform), event_id=event_id, created_at=now)
        .on_conflict_do_nothing(index_elements=["platform", "event_id"])
        .returning(ProcessedEvent.id)
    ).first()
    return inserted is not None


def forget_events_before(session: Session, cutoff: datetime) -> int:
    """Drop event ids recorded before `cutoff`; returns how many."""
    return session.execute(
        delete(ProcessedEvent).where(ProcessedEvent.created_at < cutoff)
    ).rowcount


# --- views -----------------------------------------------------------------------------------


def image_view(image: Image) -> ImageView:
    return ImageView(
        id=image.id,
        generation_id=image.generation_id,
        index=image.index,
        storage_key=image.storage_key,
        width=image.width,
        height=image.height,
        seed=image.seed,
    )


def message_ref(message: ChatMessage) -> MessageRef:
    return MessageRef(
        channel_id=message.channel_id,
        message_id=message.message_id,
        generation_id=message.generation_id,
        image_index=message.image_index,
        role=MessageRole(message.role),
    )


def generation_view(generation: Generation) -> GenerationView:
    parent = generation.parent_image
    return GenerationView(
        id=generation.id,
        kind=GenerationKind(generation.kind),
        status=GenerationStatus(generation.status),
        platform=Platform(generation.platform),
        team_external_id=generation.team.external_id,
        requester_external_id=generation.requester.external_id,
        requester_name=generation.requester.display_name,
        prompt=generation.prompt,
        negative_prompt=generation.negative_prompt,
        params=dict(generation.params or {}),
        seed=generation.seed,
        model_id=generation.model_id,
        parent_generation_id=parent.generation_id if parent else None,
        parent_image_index=parent.index if parent else None,
        thread_root_id=generation.thread_root_id,
        reply_target=dict(generation.reply_target or {}),
        progress=generation.progress,
        stage=generation.stage,
        error=generation.error,
        cost=generation.cost,
        created_at=generation.created_at,
        started_at=generation.started_at,
        finished_at=generation.finished_at,
        delivered_at=generation.delivered_at,
        delivery_attempts=generation.delivery_attempts or 0,
        grid_key=generation.grid_key,
        render_ms=generation.render_ms,
        images=tuple(image_view(i) for i in generation.images),
    )
