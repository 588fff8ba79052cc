"""Teams and users (created on first sight), and the moderation rows that hang off a team:
bans, blocked terms, the audit log; and what a submit reads of all of them, in one statement."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import JSON, Select, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session

from engine.domain.types import Actor, GenerationStatus
from engine.store.db import rowcount
from engine.store.models import AuditLogEntry, Ban, BlockedTerm, Generation, QuotaPolicy, Team, User, utcnow
from engine.store.repo._insert import insert_ignore

# --- teams and users -------------------------------------------------------------------------


def ensure_team(session: Session, platform: str, external_id: str, name: str = "") -> Team:
    team = session.scalar(select(Team).where(Team.platform == platform, Team.external_id == external_id))
    if team is None:
        insert_ignore(
            session,
            Team,
            {
                "platform": platform,
                "external_id": external_id,
                "name": name,
                "moderator_role_ids": [],
                "created_at": utcnow(),
            },
            ["platform", "external_id"],
        )
        team = session.scalars(select(Team).where(Team.platform == platform, Team.external_id == external_id)).one()
    elif name and team.name != name:
        team.name = name
    return team


def ensure_user(session: Session, team: Team, external_id: str, name: str = "") -> User:
    user = session.scalar(select(User).where(User.team_id == team.id, User.external_id == external_id))
    if user is None:
        insert_ignore(
            session,
            User,
            {"team_id": team.id, "external_id": external_id, "display_name": name, "created_at": utcnow()},
            ["team_id", "external_id"],
        )
        user = session.scalars(select(User).where(User.team_id == team.id, User.external_id == external_id)).one()
    elif name and user.display_name != name:
        user.display_name = name
    return user


def ensure_actor(session: Session, actor: Actor) -> tuple[Team, User]:
    """The actor's team and user rows, created on first sight (one query when both exist)."""
    user = session.scalar(
        select(User)
        .join(User.team)
        .where(
            Team.platform == str(actor.platform), Team.external_id == actor.team_id, User.external_id == actor.user_id
        )
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
    return session.scalar(select(User).where(User.team_id == team.id, User.external_id == external_id))


# --- moderation lookups ----------------------------------------------------------------------


def find_ban(session: Session, team: Team, user_external_id: str) -> Ban | None:
    return session.scalar(select(Ban).where(Ban.team_id == team.id, Ban.user_external_id == user_external_id))


def blocked_terms(session: Session, team: Team) -> list[str]:
    return list(
        session.scalars(select(BlockedTerm.term).where(BlockedTerm.team_id == team.id).order_by(BlockedTerm.term))
    )


def remove_blocked_term(session: Session, team: Team, term: str) -> bool:
    """Unblock a (normalised) term; False if it was not blocked."""
    result = session.execute(delete(BlockedTerm).where(BlockedTerm.team_id == team.id, BlockedTerm.term == term))
    return rowcount(result) != 0


def audit_entries(session: Session, team: Team, limit: int) -> Sequence[AuditLogEntry]:
    """The team's most recent moderator actions, newest first."""
    return session.scalars(
        select(AuditLogEntry).where(AuditLogEntry.team_id == team.id).order_by(AuditLogEntry.id.desc()).limit(limit)
    ).all()


# --- what a submit reads -----------------------------------------------------------------------


class SubmitContext(NamedTuple):
    """Everything a submit checks before it charges, read in one statement (`submit_context`)."""

    team_id: int
    team_name: str
    user_id: int
    user_name: str
    banned: bool
    ban_reason: str | None
    #: The team's blocked terms, in the order `blocked_terms` returns them.
    blocked_terms: list[str]
    #: Whether the team has any quota policy row (only then are they read: `policy_rules`).
    has_policies: bool
    #: Jobs queued or running now, in every team (the queue position is one more).
    active_jobs: int


_SUBMIT_CONTEXT: dict[str, Select[Any]] = {}


def _submit_context_statement(dialect: str) -> Select[Any]:
    """Built once per dialect (the values are bound parameters), so a submit does not pay for
    constructing it again."""
    statement = _SUBMIT_CONTEXT.get(dialect)
    if statement is not None:
        return statement
    ban = select(Ban.id).where(Ban.team_id == Team.id, Ban.user_external_id == User.external_id)
    if dialect == "postgresql":
        terms = func.json_agg(aggregate_order_by(BlockedTerm.term, BlockedTerm.term), type_=JSON)
    else:  # SQLite: sorted in Python, which is its BINARY order (UTF-8 bytes sort as code points)
        terms = func.json_group_array(BlockedTerm.term, type_=JSON)
    active = (GenerationStatus.QUEUED, GenerationStatus.RUNNING)
    statement = (
        select(
            Team.id,
            Team.name,
            User.id,
            User.display_name,
            ban.exists(),
            ban.with_only_columns(Ban.reason).scalar_subquery(),
            select(terms).where(BlockedTerm.team_id == Team.id).scalar_subquery(),
            select(QuotaPolicy.id).where(QuotaPolicy.team_id == Team.id).exists(),
            select(func.count())
            .select_from(Generation)
            .where(Generation.status.in_([str(s) for s in active]))
            .scalar_subquery(),
        )
        .select_from(User)
        .join(Team, User.team_id == Team.id)
        .where(
            Team.platform == bindparam("platform"),
            Team.external_id == bindparam("team_external_id"),
            User.external_id == bindparam("user_external_id"),
        )
    )
    _SUBMIT_CONTEXT[dialect] = statement
    return statement


def submit_context(session: Session, actor: Actor) -> SubmitContext:
    """The actor's team and user (created on first sight, names kept current), their ban, the
    team's blocked terms, whether it has quota policies, and how many jobs are queued or
    running — one statement when the actor has been seen before. Read fresh every time: a ban
    or a blocked term takes effect on the next command, on every replica."""
    dialect = session.get_bind().dialect.name
    parameters = {
        "platform": str(actor.platform),
        "team_external_id": actor.team_id,
        "user_external_id": actor.user_id,
    }
    row: Any = session.execute(_submit_context_statement(dialect), parameters).one_or_none()
    if row is None:  # first sight of this user (or team): create them, then read again
        ensure_actor(session, actor)
        session.flush()
        row = session.execute(_submit_context_statement(dialect), parameters).one()
    team_id, team_name, user_id, user_name, banned, ban_reason, terms, has_policies, active_jobs = row
    if actor.team_name and team_name != actor.team_name:
        session.execute(update(Team).where(Team.id == team_id).values(name=actor.team_name))
        team_name = actor.team_name
    if actor.user_name and user_name != actor.user_name:
        session.execute(update(User).where(User.id == user_id).values(display_name=actor.user_name))
        user_name = actor.user_name
    terms = list(terms or [])
    if dialect != "postgresql":
        terms.sort()
    return SubmitContext(
        team_id=team_id,
        team_name=team_name,
        user_id=user_id,
        user_name=user_name,
        banned=bool(banned),
        ban_reason=ban_reason,
        blocked_terms=terms,
        has_policies=bool(has_policies),
        active_jobs=int(active_jobs or 0),
    )
