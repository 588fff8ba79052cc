"""Quota: the policy rules, each user's usage row per period, and the ledger of every change to
it (debit, refund, grant, reset)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.domain.quota import PolicyRule, effective_limit, period_end, period_start
from engine.domain.views import QuotaStatus
from engine.store.models import Generation, QuotaLedgerEntry, QuotaPolicy, QuotaUsage, Team, User
from engine.store.repo._insert import dialect_insert


def policy_rules(session: Session, team: Team) -> list[PolicyRule]:
    rows = session.scalars(select(QuotaPolicy).where(QuotaPolicy.team_id == team.id))
    return [PolicyRule(r.scope, r.subject, r.daily_limit, r.unlimited, r.bonus, r.bonus_day, r.reset_at) for r in rows]


def find_policy(session: Session, team: Team, scope: str, subject: str) -> QuotaPolicy | None:
    return session.scalar(
        select(QuotaPolicy).where(
            QuotaPolicy.team_id == team.id, QuotaPolicy.scope == scope, QuotaPolicy.subject == subject
        )
    )


def lock_usage(session: Session, team: Team, user: User, now: datetime) -> QuotaUsage:
    """The user's usage row for the current period, created if needed and locked for update."""
    start = period_start(now)
    insert = dialect_insert(session)
    # One statement creates the row or, if it exists, "updates" it to itself: either way the
    # row comes back locked, which serialises concurrent debits by one user on PostgreSQL
    # (on SQLite the transaction already holds the write lock: BEGIN IMMEDIATE).
    statement = (
        insert(QuotaUsage)
        .values(team_id=team.id, user_id=user.id, period_start=start, used=0, granted=0)
        .on_conflict_do_update(index_elements=["user_id", "period_start"], set_={"used": QuotaUsage.used})
        .returning(QuotaUsage)
    )
    return session.scalars(statement, execution_options={"populate_existing": True}).one()


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
    session: Session,
    team: Team,
    user: User,
    role_ids: tuple[str, ...],
    default_limit: int,
    now: datetime,
    *,
    lock: bool = False,
) -> tuple[QuotaStatus, QuotaUsage | None]:
    limit = effective_limit(
        policy_rules(session, team),
        user_id=user.external_id,
        role_ids=role_ids,
        default_limit=default_limit,
        now=now,
    )
    usage: QuotaUsage | None
    if lock:
        usage = lock_usage(session, team, user, now)
        apply_role_reset(session, usage, limit.reset_at)
        used, granted = usage.used, usage.granted
    else:
        usage = session.scalar(
            select(QuotaUsage).where(QuotaUsage.user_id == user.id, QuotaUsage.period_start == period_start(now))
        )
        used = usage.used if usage else 0
        granted = usage.granted if usage else 0
        if usage and limit.reset_at and (usage.reset_applied_at is None or usage.reset_applied_at < limit.reset_at):
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


def debit(session: Session, usage: QuotaUsage, generation: Generation, cost: int, reason: str) -> None:
    usage.used += cost
    ledger(session, usage, "debit", cost, reason, generation_id=generation.id)


def refund(session: Session, generation: Generation, reason: str) -> int:
    """Give back what a job was charged; returns the images refunded (0 if already refunded)."""
    entries = session.scalars(select(QuotaLedgerEntry).where(QuotaLedgerEntry.generation_id == generation.id)).all()
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
