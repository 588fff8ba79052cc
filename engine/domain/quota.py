"""Quota rules: which policy applies to a user, and when a period starts and ends.

Quotas count images per UTC day. A user's limit is their own override if a moderator set one,
else the most generous of their roles' limits, else the team default, else the configured
default. Moderators can also grant extra images for the current day (per user, or to every
member of a role) and reset the day's usage.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeGuard


@dataclass(frozen=True)
class PolicyRule:
    scope: str  # team | role | user
    subject: str  # "" for team; platform role id or user id
    daily_limit: int | None  # None: this rule sets no limit (it may still carry a bonus/reset)
    unlimited: bool = False
    bonus: int = 0  # extra images today for everyone this rule covers (role grants)
    bonus_day: datetime | None = None
    reset_at: datetime | None = None  # role resets: usage before this moment no longer counts


@dataclass(frozen=True)
class EffectiveLimit:
    limit: int | None
    bonus: int
    source: str
    reset_at: datetime | None  # the latest role reset that covers this user, if any


def period_start(now: datetime) -> datetime:
    """Start of the UTC day containing `now`."""
    now = now.astimezone(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def period_end(now: datetime) -> datetime:
    return period_start(now) + timedelta(days=1)


def describe_duration(delta: timedelta) -> str:
    minutes = max(1, int(delta.total_seconds() // 60))
    hours, minutes = divmod(minutes, 60)
    if hours and minutes:
        return f"{hours} h {minutes} min"
    return f"{hours} h" if hours else f"{minutes} min"


def effective_limit(
    rules: list[PolicyRule],
    *,
    user_id: str,
    role_ids: tuple[str, ...],
    default_limit: int,
    now: datetime,
) -> EffectiveLimit:
    """Pick the limit that applies to this user today (see module docstring for precedence)."""
    today = period_start(now)
    roles = set(role_ids)
    user_rule = next((r for r in rules if r.scope == "user" and r.subject == user_id), None)
    role_rules = [r for r in rules if r.scope == "role" and r.subject in roles]
    team_rule = next((r for r in rules if r.scope == "team"), None)

    # Role and team grants and resets reach everyone they cover (user ones live on the usage row).
    shared = role_rules + ([team_rule] if team_rule else [])
    bonus = sum(r.bonus for r in shared if r.bonus_day and period_start(r.bonus_day) == today)
    resets = [r.reset_at for r in shared if r.reset_at and r.reset_at >= today]
    reset_at = max(resets) if resets else None

    def sets_limit(rule: PolicyRule | None) -> TypeGuard[PolicyRule]:
        return rule is not None and (rule.unlimited or rule.daily_limit is not None)

    if sets_limit(user_rule):
        return EffectiveLimit(_limit(user_rule), bonus, "your personal limit", reset_at)
    limiting_roles = [r for r in role_rules if sets_limit(r)]
    if limiting_roles:
        # The most generous role wins; unlimited beats any number.
        best = max(limiting_roles, key=_generosity)
        return EffectiveLimit(_limit(best), bonus, f"role {best.subject}", reset_at)
    if sets_limit(team_rule):
        return EffectiveLimit(_limit(team_rule), bonus, "the team default", reset_at)
    return EffectiveLimit(default_limit, bonus, "the server default", reset_at)


def _limit(rule: PolicyRule) -> int | None:
    return None if rule.unlimited else rule.daily_limit


def _generosity(rule: PolicyRule) -> float:
    """How many images a rule that sets a limit allows; unlimited beats any number."""
    limit = _limit(rule)
    return float("inf") if limit is None else limit
