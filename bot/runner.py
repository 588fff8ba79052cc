"""Run a parsed command against the service and say what happened, for any front-end.

Errors are handled here in one place, in this order:
1. `UserFacingError` (usage, quota, ban, blocked term, not found, not permitted, queue or
   database down): its message is the reply, marked as an error;
2. anything else is a bug: logged with the traceback, and the user gets a short apology.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot import commands as c
from bot import replies
from bot.replies import APOLOGY, Escape, Reply, no_escape
from engine import metrics
from engine.domain.errors import QuotaExceeded, UserFacingError
from engine.domain.types import Actor
from engine.domain.views import ModerationResult, SubmittedJob
from engine.service import ImagineService
from engine.store.models import utcnow

if TYPE_CHECKING:
    from bot.gallery.links import GalleryLinks

log = logging.getLogger(__name__)


class CommandRunner:
    def __init__(
        self,
        service: ImagineService,
        *,
        escape: Escape = no_escape,
        clock: Callable[[], datetime] = utcnow,
        gallery_links: GalleryLinks | None = None,
    ) -> None:
        self.service = service
        self.escape = escape
        self.clock = clock
        self.gallery_links = gallery_links  # bot.gallery.links.GalleryLinks, if configured

    async def run(self, actor: Actor, command: c.Command, reply_target: dict[str, Any] | None = None) -> Reply:
        try:
            return await self._run(actor, command, reply_target or {})
        except UserFacingError as error:
            if isinstance(error, QuotaExceeded):
                metrics.QUOTA_REFUSALS.inc()
            return Reply(error.message, ephemeral=True, is_error=True)
        except Exception:
            log.exception("command %s by %s/%s failed", type(command).__name__, actor.platform, actor.user_id)
            return Reply(APOLOGY, ephemeral=True, is_error=True)

    async def _run(self, actor: Actor, command: c.Command, reply_target: dict[str, Any]) -> Reply:  # noqa: C901 - one branch per command, by design
        service, escape = self.service, self.escape
        match command:
            case c.Imagine(request):
                submitted = await service.submit_imagine(actor, request, reply_target)
                return self._queued(submitted)
            case c.Vary(request):
                submitted = await service.submit_variation(actor, request, reply_target)
                return self._queued(submitted)
            case c.Blend(images, weights, seed, params, strip):
                submitted = await service.submit_blend(
                    actor,
                    list(images),
                    list(weights) if weights else None,
                    params,
                    seed,
                    reply_target,
                    strip=strip,
                )
                return self._queued(submitted)
            case c.Edit(request):
                submitted = await service.submit_edit(actor, request, reply_target)
                return self._queued(submitted)
            case c.Upscale(image):
                return self._queued(await service.submit_upscale(actor, image, reply_target))
            case c.Reroll(generation_id):
                submitted = await service.reroll(actor, generation_id, reply_target)
                return self._queued(submitted)
            case c.Cancel(generation_id):
                job = await service.cancel(actor, generation_id)
                return Reply(f"Cancelled {replies.job_title(job, escape)}; the quota was refunded.", job=job)
            case c.History(page):
                return Reply(replies.history_text(await service.history(actor, page), escape), ephemeral=True)
            case c.Thread(generation_id):
                return Reply(replies.thread_text(await service.thread(actor, generation_id), escape))
            case c.Quota():
                return Reply(replies.quota_text(await service.quota(actor), self.clock()), ephemeral=True)
            case c.Help():
                return Reply(c.USAGE, ephemeral=True)
            case c.Gallery():
                if self.gallery_links is None:
                    return Reply(
                        "The team gallery is not set up on this imagine-bot (an admin sets IMAGINE_GALLERY_SECRET).",
                        ephemeral=True,
                        is_error=True,
                    )
                url = self.gallery_links.url(await service.team_id(actor))
                days = max(1, self.gallery_links.ttl_s // 86400)
                return Reply(f"Your team's gallery (a private link, valid {days} days): {url}", ephemeral=True)
            case c.AdminQuota(action="set", target=target, amount=amount):
                return self._moderation(await service.set_quota(actor, target, amount))
            case c.AdminQuota(action="grant", target=target, amount=int() as amount):
                return self._moderation(await service.grant_quota(actor, target, amount))
            case c.AdminQuota(action="reset", target=target):
                return self._moderation(await service.reset_quota(actor, target))
            case c.AdminBan(user_id, reason):
                return self._moderation(await service.ban(actor, user_id, reason))
            case c.AdminUnban(user_id):
                return self._moderation(await service.unban(actor, user_id))
            case c.AdminBlockTerm(term):
                return self._moderation(await service.block_term(actor, term))
            case c.AdminUnblockTerm(term):
                return self._moderation(await service.unblock_term(actor, term))
            case c.AdminAudit(limit):
                return Reply(replies.audit_text(await service.audit_log(actor, limit), escape), ephemeral=True)
            case c.AdminStats(days):
                return Reply(replies.stats_text(await service.stats(actor, days), escape), ephemeral=True)
            case c.AdminRetention(days):
                return self._moderation(await service.set_retention(actor, days))
            case c.AdminModRole(role_id, add):
                return self._moderation(await service.set_moderator_role(actor, role_id, add=add))
        raise TypeError(f"unhandled command {command!r}")

    def _queued(self, submitted: SubmittedJob) -> Reply:
        job = submitted.generation
        return Reply(
            replies.job_status(job, submitted.queue_position, self.escape),
            job=job,
            queue_position=submitted.queue_position,
        )

    def _moderation(self, result: ModerationResult) -> Reply:
        return Reply(self.escape(result.message), ephemeral=True)
