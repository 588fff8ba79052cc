"""Quota: the policy rules, each user's usage row per period, and the ledger of every change to
it (debit, refund, grant, reset)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Integer, Table, and_, bindparam, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from engine.domain.quota import EffectiveLimit, PolicyRule, effective_limit, period_end, period_start
from engine.domain.views import QuotaStatus
from engine.store.models import Generation, QuotaLedgerEntry, QuotaPolicy, QuotaUsage, Team, User, utcnow
from engine.store.repo._insert import dialect_insert


def policy_rules(session: Session, team: Team | int) -> list[PolicyRule]:
    team_id = team if isinstance(team, int) else team.id
    rows = session.scalars(select(QuotaPolicy).where(QuotaPolicy.team_id == team_id))
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


def try_debit(session: Session, team_id: int, user_id: int, limit: EffectiveLimit, cost: int, now: datetime) -> bool:
    """Charge `cost` images to the user's usage row for the current period in one statement —
    created if needed, locked like `lock_usage` — if it fits under `limit` and no role reset is
    waiting to be applied to the row. False (and nothing changed) otherwise: the caller then
    takes the long way (`quota_status(lock=True)`, which applies a waiting reset and says how
    much is left, then charges the locked row). The ledger entry is the caller's
    (`ledger_debit`), once the job has its id."""
    cap = None if limit.limit is None else limit.limit + limit.bonus
    if cap is not None and cost > cap:
        return False  # a new row could not take it; only a grant on an existing one might
    statement = _debit_statement(session.get_bind().dialect.name, cap is not None, limit.reset_at is not None)
    parameters = {
        "team_id": team_id,
        "user_id": user_id,
        "period_start": period_start(now),
        "cost": cost,
        "cap": cap,
        "reset_at": limit.reset_at,
    }
    return session.execute(statement, parameters).first() is not None


_DEBIT: dict[tuple[str, bool, bool], Any] = {}


def _debit_statement(dialect: str, capped: bool, reset: bool) -> Any:
    """try_debit's upsert, built once per dialect and kind of limit (values are parameters)."""
    key = (dialect, capped, reset)
    if key not in _DEBIT:
        usage = cast(Table, QuotaUsage.__table__)
        cost = bindparam("cost", type_=Integer)
        conditions: list[ColumnElement[bool]] = []
        if capped:
            conditions.append(usage.c.used + cost <= usage.c.granted + bindparam("cap", type_=Integer))
        if reset:
            # NULL (never reset) compares as unknown: the long way applies the reset first.
            conditions.append(usage.c.reset_applied_at >= bindparam("reset_at", type_=usage.c.reset_applied_at.type))
        # A row created here starts with this debit, and with the reset already applied (a reset
        # of an empty row leaves nothing in the ledger, as apply_role_reset does).
        insert_ = pg_insert if dialect == "postgresql" else sqlite_insert
        _DEBIT[key] = (
            insert_(usage)
            .values(
                team_id=bindparam("team_id"),
                user_id=bindparam("user_id"),
                period_start=bindparam("period_start"),
                used=cost,
                granted=0,
                reset_applied_at=bindparam("reset_at", type_=usage.c.reset_applied_at.type) if reset else None,
            )
            .on_conflict_do_update(
                index_elements=["user_id", "period_start"],
                set_={"used": usage.c.used + cost},
                where=and_(*conditions) if conditions else None,
            )
            .returning(usage.c.id)
        )
    return _DEBIT[key]


_INSERT_LEDGER = insert(cast(Table, QuotaLedgerEntry.__table__))


def ledger_debit(
    session: Session, team_id: int, user_id: int, generation_id: int, cost: int, reason: str, now: datetime
) -> None:
    """The ledger entry of a job's debit (made by `try_debit`, or on the row `lock_usage` locked)."""
    session.execute(
        _INSERT_LEDGER,
        {
            "team_id": team_id,
            "user_id": user_id,
            "generation_id": generation_id,
            "period_start": period_start(now),
            "kind": "debit",
            "amount": cost,
            "reason": reason,
            "actor_id": None,
            "created_at": utcnow(),
        },
    )
