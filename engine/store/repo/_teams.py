"""Teams and users (created on first sight), and the moderation rows that hang off a team:
bans, blocked terms, the audit log."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from engine.domain.types import Actor
from engine.store.db import rowcount
from engine.store.models import AuditLogEntry, Ban, BlockedTerm, Team, User, utcnow
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
