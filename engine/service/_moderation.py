"""Moderation: quotas, bans, blocked terms, moderator roles, retention, the audit log and
statistics. Only moderators may act (platform admins alone choose the moderator roles), and every
change is audited."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from sqlalchemy.orm import Session

from engine.domain.errors import InvalidState, NotFound, NotPermitted, UsageError
from engine.domain.limits import MAX_BAN_REASON_CHARS, RETENTION_DAYS, STATS_DAYS, external_id
from engine.domain.terms import normalise_term
from engine.domain.types import Actor, QuotaTarget
from engine.domain.views import AuditEntry, ModerationResult, TeamStats, UsageRow
from engine.service._base import ServiceBase
from engine.store import repo
from engine.store.models import Ban, BlockedTerm, QuotaPolicy, Team, User


class Moderation(ServiceBase):
    async def set_quota(self, actor: Actor, target: QuotaTarget, limit: int | None) -> ModerationResult:
        """Set the daily image limit of a user, a role or the team (None: unlimited)."""
        if limit is not None and limit < 0:
            raise UsageError(f"A quota cannot be negative, got {limit}.")
        return await self.db.run(self._set_quota, actor, target, limit)

    def _set_quota(self, session: Session, actor: Actor, target: QuotaTarget, limit: int | None) -> ModerationResult:
        team, moderator = self._moderator(session, actor, "set quotas")
        policy = self._policy_row(session, team, target)
        policy.daily_limit = limit
        policy.unlimited = limit is None
        shown = "unlimited" if limit is None else f"{limit} images/day"
        self._audit(session, team, moderator, "quota.set", str(target), {"limit": limit})
        return ModerationResult(f"Daily quota for {target} set to {shown}.")

    async def grant_quota(self, actor: Actor, target: QuotaTarget, images: int) -> ModerationResult:
        """Give extra images for today to a user, every member of a role, or everyone."""
        if images <= 0:
            raise UsageError(f"Grant a positive number of images, got {images}.")
        return await self.db.run(self._grant_quota, actor, target, images)

    def _grant_quota(self, session: Session, actor: Actor, target: QuotaTarget, images: int) -> ModerationResult:
        team, moderator = self._moderator(session, actor, "grant quota")
        now = self.clock()
        if target.kind == "user":
            user = repo.ensure_user(session, team, target.subject)
            usage = repo.lock_usage(session, team, user, now)
            usage.granted += images
            repo.ledger(session, usage, "grant", images, "granted by a moderator", actor_id=moderator.id)
        else:
            policy = self._policy_row(session, team, target)
            same_day = policy.bonus_day and policy.bonus_day.date() == now.date()
            policy.bonus = (policy.bonus if same_day else 0) + images
            policy.bonus_day = now
        self._audit(session, team, moderator, "quota.grant", str(target), {"images": images})
        return ModerationResult(f"Granted {images} extra image(s) for today to {target}.")

    async def reset_quota(self, actor: Actor, target: QuotaTarget) -> ModerationResult:
        """Start today's usage over for a user, every member of a role, or everyone."""
        return await self.db.run(self._reset_quota, actor, target)

    def _reset_quota(self, session: Session, actor: Actor, target: QuotaTarget) -> ModerationResult:
        team, moderator = self._moderator(session, actor, "reset quotas")
        now = self.clock()
        if target.kind == "user":
            user = repo.ensure_user(session, team, target.subject)
            usage = repo.lock_usage(session, team, user, now)
            if usage.used:
                repo.ledger(session, usage, "reset", usage.used, "reset by a moderator", actor_id=moderator.id)
            usage.used = 0
        else:
            self._policy_row(session, team, target).reset_at = now
        self._audit(session, team, moderator, "quota.reset", str(target), {})
        return ModerationResult(f"Today's usage for {target} starts over now.")

    async def ban(self, actor: Actor, user_id: str, reason: str | None = None) -> ModerationResult:
        """Stop a user from submitting jobs in this team."""
        external_id(user_id, what="That user")
        if reason and len(reason) > MAX_BAN_REASON_CHARS:
            raise UsageError(f"The ban reason can be at most {MAX_BAN_REASON_CHARS} characters.")
        return await self.db.run(self._ban, actor, user_id, reason)

    def _ban(self, session: Session, actor: Actor, user_id: str, reason: str | None) -> ModerationResult:
        team, moderator = self._moderator(session, actor, "ban users")
        if user_id == actor.user_id:
            raise UsageError("You cannot ban yourself.")
        if repo.find_ban(session, team, user_id) is not None:
            raise InvalidState(f"User {user_id} is already banned.")
        session.add(
            Ban(
                team_id=team.id,
                user_external_id=user_id,
                reason=reason,
                banned_by_id=moderator.id,
                created_at=self.clock(),
            )
        )
        self._audit(session, team, moderator, "ban", f"user {user_id}", {"reason": reason})
        return ModerationResult(f"User {user_id} is banned" + (f": {reason}" if reason else "."))

    async def unban(self, actor: Actor, user_id: str) -> ModerationResult:
        external_id(user_id, what="That user")
        return await self.db.run(self._unban, actor, user_id)

    def _unban(self, session: Session, actor: Actor, user_id: str) -> ModerationResult:
        team, moderator = self._moderator(session, actor, "unban users")
        ban = repo.find_ban(session, team, user_id)
        if ban is None:
            raise NotFound(f"User {user_id} is not banned.")
        session.delete(ban)
        self._audit(session, team, moderator, "unban", f"user {user_id}", {})
        return ModerationResult(f"User {user_id} may use imagine-bot again.")

    async def block_term(self, actor: Actor, term: str) -> ModerationResult:
        """Refuse prompts containing `term` (whole words, any case) in this team."""
        return await self.db.run(self._block_term, actor, term)

    def _block_term(self, session: Session, actor: Actor, term: str) -> ModerationResult:
        team, moderator = self._moderator(session, actor, "block terms")
        normalised = self._valid_term(term)
        if normalised in repo.blocked_terms(session, team):
            raise InvalidState(f"{normalised!r} is already blocked.")
        session.add(BlockedTerm(team_id=team.id, term=normalised, added_by_id=moderator.id, created_at=self.clock()))
        self._audit(session, team, moderator, "term.block", normalised, {})
        return ModerationResult(f"Prompts containing {normalised!r} are now refused.")

    async def unblock_term(self, actor: Actor, term: str) -> ModerationResult:
        return await self.db.run(self._unblock_term, actor, term)

    def _unblock_term(self, session: Session, actor: Actor, term: str) -> ModerationResult:
        team, moderator = self._moderator(session, actor, "unblock terms")
        normalised = self._valid_term(term)
        if not repo.remove_blocked_term(session, team, normalised):
            raise NotFound(f"{normalised!r} is not blocked.")
        self._audit(session, team, moderator, "term.unblock", normalised, {})
        return ModerationResult(f"{normalised!r} is no longer blocked.")

    async def blocked_terms(self, actor: Actor) -> list[str]:
        """The team's blocked terms (moderators only: the list itself can be offensive)."""

        def read(session: Session) -> list[str]:
            team, _ = self._moderator(session, actor, "see blocked terms")
            return repo.blocked_terms(session, team)

        return await self.db.run(read)

    async def set_moderator_role(self, actor: Actor, role_id: str, *, add: bool) -> ModerationResult:
        """Make a role's members moderators (or stop); only platform admins may."""
        external_id(role_id, what="That role")
        return await self.db.run(self._set_moderator_role, actor, role_id, add)

    def _set_moderator_role(self, session: Session, actor: Actor, role_id: str, add: bool) -> ModerationResult:
        team, admin = repo.ensure_actor(session, actor)
        if not actor.is_platform_admin:
            raise NotPermitted("Only server/workspace admins can choose the moderator roles.")
        roles = list(team.moderator_role_ids or [])
        if add and role_id not in roles:
            roles.append(role_id)
        elif not add and role_id in roles:
            roles.remove(role_id)
        team.moderator_role_ids = roles
        self._audit(
            session, team, admin, "moderator_role.add" if add else "moderator_role.remove", f"role {role_id}", {}
        )
        verb = "are now" if add else "are no longer"
        return ModerationResult(f"Members of role {role_id} {verb} imagine-bot moderators.")

    async def set_retention(self, actor: Actor, days: int | None) -> ModerationResult:
        """Keep this team's jobs and images `days` days (0: forever; None: the server default)."""
        low, high = RETENTION_DAYS
        if days is not None and not low <= days <= high:
            raise UsageError(f"Retention is 0 (keep everything) to {high} days, got {days}.")

        def apply(session: Session) -> ModerationResult:
            team, moderator = self._moderator(session, actor, "set how long images are kept")
            team.retention_days = days
            self._audit(session, team, moderator, "retention.set", "team", {"days": days})
            if days is None:
                return ModerationResult("This team now keeps images as long as the server default says.")
            if days == 0:
                return ModerationResult("This team now keeps its images and jobs forever.")
            return ModerationResult(f"Jobs and images older than {days} days will be deleted.")

        return await self.db.run(apply)

    async def audit_log(self, actor: Actor, limit: int = 20) -> list[AuditEntry]:
        """The team's most recent moderator actions, newest first."""
        return await self.db.run(self._audit_log, actor, limit)

    def _audit_log(self, session: Session, actor: Actor, limit: int) -> list[AuditEntry]:
        team, _ = self._moderator(session, actor, "read the audit log")
        rows = repo.audit_entries(session, team, max(1, min(limit, 100)))
        return [
            AuditEntry(
                id=r.id,
                created_at=r.created_at,
                actor=(r.actor.display_name or r.actor.external_id) if r.actor else "?",
                action=r.action,
                target=r.target,
                details=dict(r.details or {}),
            )
            for r in rows
        ]

    async def stats(self, actor: Actor, days: int = 7) -> TeamStats:
        """Jobs, failures and usage by user and by role over the last `days` days (moderators)."""
        low, high = STATS_DAYS
        if not low <= days <= high:
            raise UsageError(f"Statistics cover {low} to {high} days, got {days}.")
        return await self.db.run(self._stats, actor, days)

    def _stats(self, session: Session, actor: Actor, days: int) -> TeamStats:
        team, _ = self._moderator(session, actor, "see statistics")
        since = self.clock() - timedelta(days=days)
        rows = repo.team_jobs_since(session, team, since)
        by_status: Counter[str] = Counter()
        failures: Counter[str] = Counter()
        users: dict[str, list[int]] = {}
        roles: dict[str, list[int]] = {}
        for status, cost, error, role_ids, name, user_external_id in rows:
            by_status[status] += 1
            charged = cost if status not in ("failed", "cancelled") else 0
            if status == "failed":
                failures[error or "unknown"] += 1
            for bucket, key in [(users, name or user_external_id)] + [(roles, r) for r in role_ids or []]:
                totals = bucket.setdefault(key, [0, 0])
                totals[0] += 1
                totals[1] += charged

        def ranked(bucket: dict[str, list[int]]) -> list[UsageRow]:
            ordered = sorted(bucket.items(), key=lambda item: (-item[1][1], item[0]))
            return [UsageRow(who, jobs, images) for who, (jobs, images) in ordered[:10]]

        return TeamStats(
            days=days,
            jobs=len(rows),
            images=sum(totals[1] for totals in users.values()),
            by_status=dict(by_status),
            failures=failures.most_common(5),
            by_user=ranked(users),
            by_role=ranked(roles),
        )

    async def is_moderator(self, actor: Actor) -> bool:
        def check(session: Session) -> bool:
            team, _ = repo.ensure_actor(session, actor)
            return self._is_moderator(team, actor)

        return await self.db.run(check)

    # --- helpers -----------------------------------------------------------------------------

    def _moderator(self, session: Session, actor: Actor, what: str) -> tuple[Team, User]:
        team, user = repo.ensure_actor(session, actor)
        if not self._is_moderator(team, actor):
            raise NotPermitted(f"Only moderators can {what} (server admins, or members of a moderator role).")
        return team, user

    def _policy_row(self, session: Session, team: Team, target: QuotaTarget) -> QuotaPolicy:
        if target.kind not in ("user", "role", "team"):
            raise UsageError(f"A quota target is a user, a role or the team, not {target.kind!r}.")
        subject = "" if target.kind == "team" else target.subject
        if target.kind != "team" and not subject:
            raise UsageError(f"Say which {target.kind} the quota is for.")
        if subject:
            external_id(subject, what=f"That {target.kind}")
        policy = repo.find_policy(session, team, target.kind, subject)
        if policy is None:
            policy = QuotaPolicy(team_id=team.id, scope=target.kind, subject=subject, bonus=0, unlimited=False)
            session.add(policy)
        return policy

    def _valid_term(self, term: str) -> str:
        normalised = normalise_term(term or "")
        if not normalised:
            raise UsageError("Say which term to block, e.g. `block-term gore`.")
        if len(normalised) > self.policy.max_term_chars:
            raise UsageError(f"A blocked term can be at most {self.policy.max_term_chars} characters.")
        return normalised
