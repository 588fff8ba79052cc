"""Use cases: everything users and moderators can ask of imagine-bot, platform-neutral.

Adapters translate a platform payload into an `Actor` plus a request, call one method here and
render what comes back. Rules (quota, bans, blocked terms, threads, permissions) live here and
in engine.domain, never in an adapter. This module imports no platform, Celery or torch module:
the queue is handed in as a `JobQueue`.

Every submit follows the same order: validate → (one transaction) refuse banned users and
blocked prompts without charging, reserve quota, write the job row → enqueue. If the enqueue
fails the job is marked failed and refunded in a second transaction.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.orm import Session

from engine.domain.errors import (
    UserFacingError,
    InvalidState,
    NotFound,
    NotPermitted,
    PromptRejected,
    QueueUnavailable,
    QuotaExceeded,
    UsageError,
    UserBanned,
)
from engine.domain.limits import (
    EDIT_AMOUNT,
    MAX_HISTORY_PAGE,
    MAX_SEED,
    RETENTION_DAYS,
    STATS_DAYS,
    STRIP_FRAMES,
    external_id,
)
from engine.domain.quota import describe_duration
from engine.domain.terms import blocked_term_in, normalise_term
from engine.domain.types import (
    Actor,
    GenerationKind,
    GenerationStatus,
    ImageRef,
    ImagineRequest,
    QuotaTarget,
    RenderParams,
    VariationRequest,
    normalise_prompt,
)
from engine.domain.views import (
    AuditEntry,
    GenerationView,
    HistoryPage,
    ImageView,
    ModerationResult,
    QuotaStatus,
    SubmittedJob,
    TeamStats,
    ThreadNode,
    UsageRow,
)
from engine.images import decode_upload, encode_png
from engine.storage import ImageStore
from engine.store import repo
from engine.store.db import Database
from engine.store.models import (
    AuditLogEntry,
    Ban,
    BlockedTerm,
    Generation,
    QuotaPolicy,
    Team,
    User,
    utcnow,
)

log = logging.getLogger(__name__)


class JobQueue(Protocol):
    """Where job ids go to be rendered (Celery in production)."""

    def enqueue(self, generation_id: int, task_id: str) -> None:
        """Publish one job id; raise on any failure to reach the broker."""


@dataclass(frozen=True)
class ServicePolicy:
    """The deployment's knobs the use cases need."""

    default_model: str
    available_models: tuple[str, ...] = ()
    default_daily_images: int = 200
    max_prompt_chars: int = 1000
    max_steps: int = 100
    max_guidance: float = 30.0
    history_page_size: int = 10
    max_term_chars: int = 100
    max_upload_bytes: int = 10 * 1024 * 1024
    max_upload_pixels: int = 4096 * 4096
    #: A publish that has not returned by then counts as failed (the job is refunded); a
    #: broker that accepts connections but does not answer must not hold the user longer.
    enqueue_timeout_s: float = 5.0


def new_task_id() -> str:
    """The Celery task id, chosen before the row is written so one INSERT stores it."""
    return uuid.uuid4().hex


class ImagineService:
    """The one entry point adapters use."""

    def __init__(
        self,
        db: Database,
        queue: JobQueue,
        policy: ServicePolicy,
        *,
        store: ImageStore | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.queue = queue
        self.policy = policy
        self.store = store
        self.clock = clock
        self._image_work = asyncio.Semaphore(2)

    # --- submitting jobs ---------------------------------------------------------------------

    async def submit_imagine(
        self, actor: Actor, request: ImagineRequest, reply_target: dict[str, Any] | None = None
    ) -> SubmittedJob:
        """Queue a text → image job, charging the actor's quota."""
        prompt = normalise_prompt(request.prompt, max_chars=self.policy.max_prompt_chars)
        negative = None
        if request.negative_prompt is not None and request.negative_prompt.strip():
            negative = normalise_prompt(
                request.negative_prompt, max_chars=self.policy.max_prompt_chars,
                what="Negative prompt",
            )
        self._validate_params(request.params)
        model = self._resolve_model(request.model)
        seed = self._resolve_seed(request.seed)
        job = _NewJob(
            kind=GenerationKind.IMAGINE, prompt=prompt, negative_prompt=negative,
            params=request.params, seed=seed, model_id=model,
        )
        return await self._submit(actor, job, reply_target or {})

    async def submit_variation(
        self, actor: Actor, request: VariationRequest, reply_target: dict[str, Any] | None = None
    ) -> SubmittedJob:
        """Queue variations of one stored image (from its CLIP image embedding), optionally
        turned toward a text (the unCLIP paper's text diff: "make it winter")."""
        self._validate_params(request.params)
        seed = self._resolve_seed(request.seed)
        extra: dict[str, Any] = {}
        if request.toward is not None:
            extra["edit_toward"] = normalise_prompt(
                request.toward, max_chars=self.policy.max_prompt_chars, what="The --toward text"
            )
            if request.amount is not None:
                low, high = EDIT_AMOUNT
                if not low <= request.amount <= high:
                    raise UsageError(f"--amount must be between {low:g} and {high:g}, got {request.amount:g}.")
                extra["edit_amount"] = request.amount
        elif request.amount is not None:
            raise UsageError("--amount goes with --toward: say what to turn the image toward.")
        job = _NewJob(
            kind=GenerationKind.VARIATION, prompt="", negative_prompt=None,
            params=request.params, seed=seed, model_id="", image_ref=request.image,
            extra_params=extra,
        )
        return await self._submit(actor, job, reply_target or {})

    async def submit_upload_variation(
        self, actor: Actor, data: bytes, params: RenderParams, seed: int | None = None,
        reply_target: dict[str, Any] | None = None,
    ) -> SubmittedJob:
        """Queue variations of an uploaded image (the worker encodes it with CLIP).

        The file is checked (size, pixel count, that it decodes at all) before anything is
        written, and stored re-encoded as PNG, which also drops whatever metadata it carried.
        """
        self._validate_params(params)
        if self.store is None:
            raise UsageError("Uploads are not enabled on this imagine-bot.")
        # Decoding and re-encoding a large picture takes seconds of CPU: off the event loop (the
        # bot's other commands must still be acknowledged within 3 s), at most two at a time.
        async with self._image_work:
            png = await asyncio.to_thread(self._reencode_upload, data)
        key = f"uploads/{uuid.uuid4().hex}.png"
        await asyncio.to_thread(self.store.put, key, png)
        job = _NewJob(
            kind=GenerationKind.VARIATION, prompt="an uploaded image", negative_prompt=None,
            params=params, seed=self._resolve_seed(seed), model_id=self.policy.default_model,
            extra_params={"source_key": key, "source": "upload"},
        )
        try:
            return await self._submit(actor, job, reply_target or {})
        except UserFacingError as error:
            if not isinstance(error, QueueUnavailable):
                await asyncio.to_thread(self.store.delete, key)  # nothing refers to it
            raise

    def _reencode_upload(self, data: bytes) -> bytes:
        picture = decode_upload(
            data, max_bytes=self.policy.max_upload_bytes, max_pixels=self.policy.max_upload_pixels
        )
        return encode_png(picture)

    async def submit_blend(
        self, actor: Actor, images: list[ImageRef], weights: list[float] | None = None,
        params: RenderParams | None = None, seed: int | None = None,
        reply_target: dict[str, Any] | None = None, strip: int | None = None,
    ) -> SubmittedJob:
        """Queue a blend of 2-4 stored images (their CLIP image embeddings, slerped by weight),
        or with `strip` an interpolation strip: that many frames from one image to another."""
        params = params or RenderParams()
        if strip is not None:
            if len(images) != 2:
                raise UsageError(f"An interpolation strip goes from one image to another: give 2, got {len(images)}.")
            low, high = STRIP_FRAMES
            if not low <= strip <= high:
                raise UsageError(f"--strip must be between {low} and {high} frames, got {strip}.")
            self._validate_params(replace(params, n=1))
            job = _NewJob(
                kind=GenerationKind.BLEND, prompt="", negative_prompt=None,
                params=replace(params, n=strip), seed=self._resolve_seed(seed), model_id="",
                image_ref=images[0], extra_refs=(images[1],), weights=(1.0, 1.0),
                extra_params={"strip": strip},
            )
            return await self._submit(actor, job, reply_target or {})
        self._validate_params(params)
        if not 2 <= len(images) <= 4:
            raise UsageError(f"Blend 2 to 4 images, got {len(images)}.")
        if weights is None:
            weights = [1.0] * len(images)
        if len(weights) != len(images):
            raise UsageError(f"Give one weight per image: {len(images)} images, {len(weights)} weights.")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise UsageError("Blend weights must be zero or more, and not all zero.")
        job = _NewJob(
            kind=GenerationKind.BLEND, prompt="", negative_prompt=None, params=params,
            seed=self._resolve_seed(seed), model_id="", image_ref=images[0],
            extra_refs=tuple(images[1:]), weights=tuple(weights),
        )
        return await self._submit(actor, job, reply_target or {})

    async def submit_upscale(
        self, actor: Actor, image: ImageRef, reply_target: dict[str, Any] | None = None
    ) -> SubmittedJob:
        """Queue an upscale of one image of a grid (one image of quota)."""
        job = _NewJob(
            kind=GenerationKind.UPSCALE, prompt="", negative_prompt=None,
            params=RenderParams(n=1), seed=self._resolve_seed(None), model_id="", image_ref=image,
        )
        return await self._submit(actor, job, reply_target or {})

    async def reroll(
        self, actor: Actor, generation_id: int | None, reply_target: dict[str, Any] | None = None
    ) -> SubmittedJob:
        """Queue the same request again with a new seed, charged to whoever asks."""
        original = await self.db.run(self._load_for_actor, actor, generation_id)
        if original.kind == GenerationKind.UPSCALE:
            raise InvalidState("An upscale renders the same image every time; there is nothing to reroll.")
        params = RenderParams.from_dict(original.params)
        job = _NewJob(
            kind=GenerationKind.REROLL, prompt=original.prompt,
            negative_prompt=original.negative_prompt, params=params,
            seed=self._resolve_seed(None), model_id=original.model_id,
            image_ref=(
                ImageRef(original.parent_generation_id, original.parent_image_index)
                if original.parent_generation_id is not None else None
            ),
            reroll_of=original.id,
        )
        return await self._submit(actor, job, reply_target or {})

    async def _submit(self, actor: Actor, job: _NewJob, reply_target: dict[str, Any]) -> SubmittedJob:
        task_id = new_task_id()
        view, position = await self.db.run(self._create_job, actor, job, reply_target, task_id)
        log.info(
            "job %s queued: %s by %s/%s, %d image(s)",
            view.id, view.kind, actor.platform, actor.user_id, view.cost,
        )
        try:
            # If the publish still completes after the timeout, the worker finds the job failed
            # and does nothing: the refund below stands.
            await asyncio.wait_for(asyncio.to_thread(self.queue.enqueue, view.id, task_id),
                                   self.policy.enqueue_timeout_s)
        except Exception as error:  # noqa: BLE001 - any broker failure means "queue down"
            log.error("job %s: enqueue failed, refunding: %r", view.id, error)
            await self.db.run(self._fail_enqueue, view.id)
            raise QueueUnavailable() from error
        return SubmittedJob(generation=view, queue_position=position)

    def _create_job(
        self, session: Session, actor: Actor, job: _NewJob, reply_target: dict[str, Any],
        task_id: str,
    ) -> tuple[GenerationView, int]:
        now = self.clock()
        team, user = repo.ensure_actor(session, actor)
        ban = repo.find_ban(session, team, actor.user_id)
        if ban is not None:
            raise UserBanned(ban.reason)

        parent_image = None
        thread_root_id = None
        params = {**job.params.to_dict(), **job.extra_params}
        if job.image_ref is not None:
            parent_image = self._resolve_image(session, team, user, job.image_ref)
            parent = parent_image.generation
            thread_root_id = parent.thread_root_id or parent.id
            if not job.prompt:
                job = replace(
                    job, prompt=parent.prompt, negative_prompt=parent.negative_prompt,
                    model_id=parent.model_id,
                )
            if "edit_toward" in params:
                # The text diff runs from what the parent was asked for, toward the new text.
                described = parent.kind != "blend" and (parent.params or {}).get("source") != "upload"
                params["edit_from"] = parent.prompt if described else ""
                self._refuse_blocked_terms(session, team, params["edit_toward"])
        if job.extra_refs:
            sources = [parent_image] + [
                self._resolve_image(session, team, user, ref) for ref in job.extra_refs
            ]
            params["sources"] = [
                {"image_id": image.id, "label": f"#{image.generation_id}:{image.index}", "weight": w}
                for image, w in zip(sources, job.weights, strict=True)
            ]
            labels = [s["label"] for s in params["sources"]]
            job = replace(job, prompt=(f"strip from {labels[0]} to {labels[1]}" if "strip" in params
                                       else "blend of " + " + ".join(labels)))
        self._refuse_blocked_terms(session, team, job.prompt)

        cost = job.params.n
        status, usage = repo.quota_status(
            session, team, user, actor.role_ids, self.policy.default_daily_images, now, lock=True
        )
        if status.remaining is not None and status.remaining < cost:
            raise QuotaExceeded(cost, status.remaining, describe_duration(status.resets_at - now))

        if job.reroll_of is not None:
            params["reroll_of"] = job.reroll_of
        generation = Generation(
            requester_role_ids=list(actor.role_ids),
            team_id=team.id,
            requester_id=user.id,
            platform=str(actor.platform),
            kind=str(job.kind),
            status=str(GenerationStatus.QUEUED),
            prompt=job.prompt,
            negative_prompt=job.negative_prompt,
            params=params,
            seed=job.seed,
            model_id=job.model_id,
            parent_image_id=parent_image.id if parent_image else None,
            thread_root_id=thread_root_id,
            reply_target=reply_target,
            cost=cost,
            task_id=task_id,
            progress=0.0,
            attempts=0,
            render_info={},
            created_at=now,
            updated_at=now,
            enqueued_at=now,  # published right after this transaction
            delivery_attempts=0,
            # Known already: set them so building the view needs no further queries.
            team=team,
            requester=user,
            parent_image=parent_image,
            images=[],
        )
        session.add(generation)
        session.flush()
        repo.debit(session, usage, generation, cost, f"{job.kind} #{generation.id}")
        return repo.generation_view(generation), repo.queue_position(session, generation)

    def _fail_enqueue(self, session: Session, generation_id: int) -> None:
        generation = repo.get_generation(session, generation_id, lock=True)
        if generation is None or GenerationStatus(generation.status).is_final:
            return
        now = self.clock()
        generation.status = str(GenerationStatus.FAILED)
        generation.error = "the render queue could not be reached"
        generation.finished_at = now
        # The user is told at once, in the reply to their command: nothing left to deliver.
        generation.delivered_at = now
        repo.refund(session, generation, "queue unavailable")

    # --- acting on jobs ----------------------------------------------------------------------

    async def cancel(self, actor: Actor, generation_id: int | None) -> GenerationView:
        """Cancel a queued or running job (its requester or a moderator) and refund it."""
        return await self.db.run(self._cancel, actor, generation_id)

    def _cancel(self, session: Session, actor: Actor, generation_id: int | None) -> GenerationView:
        team, user = repo.ensure_actor(session, actor)
        generation = self._find_generation(session, team, user, generation_id, lock=True)
        if generation.requester_id != user.id and not self._is_moderator(team, actor):
            raise NotPermitted("Only the person who asked for this job, or a moderator, can cancel it.")
        status = GenerationStatus(generation.status)
        if status.is_final:
            raise InvalidState(f"Job #{generation.id} is already {status}; there is nothing to cancel.")
        generation.status = str(GenerationStatus.CANCELLED)
        generation.finished_at = self.clock()
        generation.error = f"cancelled by {actor.user_name or actor.user_id}"
        repo.refund(session, generation, f"cancelled by {actor.user_id}")
        log.info("job %s cancelled by %s/%s", generation.id, actor.platform, actor.user_id)
        session.flush()
        return repo.generation_view(generation)

    async def authorize_removal(self, actor: Actor, generation_id: int) -> GenerationView:
        """Allow removing a job's chat messages: its requester may, a moderator may (audited)."""
        return await self.db.run(self._authorize_removal, actor, generation_id)

    def _authorize_removal(self, session: Session, actor: Actor, generation_id: int) -> GenerationView:
        team, user = repo.ensure_actor(session, actor)
        generation = self._find_generation(session, team, user, generation_id)
        if generation.requester_id != user.id:
            if not self._is_moderator(team, actor):
                raise NotPermitted("Only the person who asked for this job, or a moderator, can remove it.")
            self._audit(session, team, user, "messages.remove", f"job #{generation.id}", {})
        return repo.generation_view(generation)

    async def job_for_actor(self, actor: Actor, generation_id: int | None) -> GenerationView:
        """A job of the actor's team (their latest one when no id is given)."""
        return await self.db.run(self._load_for_actor, actor, generation_id)

    def _load_for_actor(
        self, session: Session, actor: Actor, generation_id: int | None
    ) -> GenerationView:
        team, user = repo.ensure_actor(session, actor)
        return repo.generation_view(self._find_generation(session, team, user, generation_id))

    async def image(self, actor: Actor, ref: ImageRef) -> tuple[GenerationView, ImageView]:
        """Resolve an image reference of the actor's team."""
        return await self.db.run(self._image_for_actor, actor, ref)

    def _image_for_actor(
        self, session: Session, actor: Actor, ref: ImageRef
    ) -> tuple[GenerationView, ImageView]:
        team, user = repo.ensure_actor(session, actor)
        image = self._resolve_image(session, team, user, ref)
        return repo.generation_view(image.generation), repo.image_view(image)

    # --- reading history ---------------------------------------------------------------------

    async def history(self, actor: Actor, page: int = 1) -> HistoryPage:
        """One page of the actor's jobs, newest first."""
        if page < 1:
            raise UsageError(f"Pages start at 1, got {page}.")
        if page > MAX_HISTORY_PAGE:
            raise UsageError(f"There is no page {page}; history has at most {MAX_HISTORY_PAGE:,} pages.")
        return await self.db.run(self._history, actor, page)

    def _history(self, session: Session, actor: Actor, page: int) -> HistoryPage:
        _, user = repo.ensure_actor(session, actor)
        size = self.policy.history_page_size
        rows, total = repo.user_generations(session, user, offset=(page - 1) * size, limit=size)
        pages = max(1, math.ceil(total / size))
        if page > pages:
            raise UsageError(f"There are only {pages} page(s) of history.")
        return HistoryPage(tuple(repo.generation_view(g) for g in rows), page, pages, total)

    async def thread(self, actor: Actor, generation_id: int | None = None) -> ThreadNode:
        """The variation lineage tree that contains a job (from its root)."""
        return await self.db.run(self._thread, actor, generation_id)

    def _thread(self, session: Session, actor: Actor, generation_id: int | None) -> ThreadNode:
        team, user = repo.ensure_actor(session, actor)
        generation = self._find_generation(session, team, user, generation_id)
        root_id = generation.thread_root_id or generation.id
        members = [repo.generation_view(g) for g in repo.thread_members(session, root_id)]
        return build_thread_tree(root_id, members)

    async def quota(self, actor: Actor) -> QuotaStatus:
        """What the actor has left today and when it resets."""
        return await self.db.run(self._quota, actor)

    def _quota(self, session: Session, actor: Actor) -> QuotaStatus:
        team, user = repo.ensure_actor(session, actor)
        status, _ = repo.quota_status(
            session, team, user, actor.role_ids, self.policy.default_daily_images, self.clock()
        )
        return status

    async def team_id(self, actor: Actor) -> int:
        """The database id of the actor's team (what a gallery link is signed for; the gallery
        itself reads through `TeamGallery`)."""
        return await self.db.run(lambda session: repo.ensure_actor(session, actor)[0].id)

    # --- moderation --------------------------------------------------------------------------

    async def set_quota(self, actor: Actor, target: QuotaTarget, limit: int | None) -> ModerationResult:
        """Set the daily image limit of a user, a role or the team (None: unlimited)."""
        if limit is not None and limit < 0:
            raise UsageError(f"A quota cannot be negative, got {limit}.")
        return await self.db.run(self._set_quota, actor, target, limit)

    def _set_quota(self, session: Session, actor: Actor, target: QuotaTarget, limit: int | None):
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

    def _grant_quota(self, session: Session, actor: Actor, target: QuotaTarget, images: int):
        team, moderator = self._moderator(session, actor, "grant quota")
        now = self.clock()
        if target.kind == "user":
            user = repo.ensure_user(session, team, target.subject)
            usage = repo.lock_usage(session, team, user, now)
            usage.granted += images
            repo.ledger(session, usage, "grant", images, "granted by a moderator",
                        actor_id=moderator.id)
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

    def _reset_quota(self, session: Session, actor: Actor, target: QuotaTarget):
        team, moderator = self._moderator(session, actor, "reset quotas")
        now = self.clock()
        if target.kind == "user":
            user = repo.ensure_user(session, team, target.subject)
            usage = repo.lock_usage(session, team, user, now)
            if usage.used:
                repo.ledger(session, usage, "reset", usage.used, "reset by a moderator",
                            actor_id=moderator.id)
            usage.used = 0
        else:
            self._policy_row(session, team, target).reset_at = now
        self._audit(session, team, moderator, "quota.reset", str(target), {})
        return ModerationResult(f"Today's usage for {target} starts over now.")

    async def ban(self, actor: Actor, user_id: str, reason: str | None = None) -> ModerationResult:
        """Stop a user from submitting jobs in this team."""
        external_id(user_id, what="That user")
        return await self.db.run(self._ban, actor, user_id, reason)

    def _ban(self, session: Session, actor: Actor, user_id: str, reason: str | None):
        team, moderator = self._moderator(session, actor, "ban users")
        if user_id == actor.user_id:
            raise UsageError("You cannot ban yourself.")
        if repo.find_ban(session, team, user_id) is not None:
            raise InvalidState(f"User {user_id} is already banned.")
        session.add(Ban(team_id=team.id, user_external_id=user_id, reason=reason,
                        banned_by_id=moderator.id, created_at=self.clock()))
        self._audit(session, team, moderator, "ban", f"user {user_id}", {"reason": reason})
        return ModerationResult(f"User {user_id} is banned" + (f": {reason}" if reason else "."))

    async def unban(self, actor: Actor, user_id: str) -> ModerationResult:
        external_id(user_id, what="That user")
        return await self.db.run(self._unban, actor, user_id)

    def _unban(self, session: Session, actor: Actor, user_id: str):
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

    def _block_term(self, session: Session, actor: Actor, term: str):
        team, moderator = self._moderator(session, actor, "block terms")
        normalised = self._valid_term(term)
        if normalised in repo.blocked_terms(session, team):
            raise InvalidState(f"{normalised!r} is already blocked.")
        session.add(BlockedTerm(team_id=team.id, term=normalised, added_by_id=moderator.id,
                                created_at=self.clock()))
        self._audit(session, team, moderator, "term.block", normalised, {})
        return ModerationResult(f"Prompts containing {normalised!r} are now refused.")

    async def unblock_term(self, actor: Actor, term: str) -> ModerationResult:
        return await self.db.run(self._unblock_term, actor, term)

    def _unblock_term(self, session: Session, actor: Actor, term: str):
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

    def _set_moderator_role(self, session: Session, actor: Actor, role_id: str, add: bool):
        team, admin = repo.ensure_actor(session, actor)
        if not actor.is_platform_admin:
            raise NotPermitted("Only server/workspace admins can choose the moderator roles.")
        roles = list(team.moderator_role_ids or [])
        if add and role_id not in roles:
            roles.append(role_id)
        elif not add and role_id in roles:
            roles.remove(role_id)
        team.moderator_role_ids = roles
        self._audit(session, team, admin, "moderator_role.add" if add else "moderator_role.remove",
                    f"role {role_id}", {})
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
                id=r.id, created_at=r.created_at,
                actor=(r.actor.display_name or r.actor.external_id) if r.actor else "?",
                action=r.action, target=r.target, details=dict(r.details or {}),
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
        for status, cost, error, role_ids, name, external_id in rows:
            by_status[status] += 1
            charged = cost if status not in ("failed", "cancelled") else 0
            if status == "failed":
                failures[error or "unknown"] += 1
            for bucket, key in [(users, name or external_id)] + [(roles, r) for r in role_ids or []]:
                totals = bucket.setdefault(key, [0, 0])
                totals[0] += 1
                totals[1] += charged

        def ranked(bucket: dict[str, list[int]]) -> list[UsageRow]:
            ordered = sorted(bucket.items(), key=lambda item: (-item[1][1], item[0]))
            return [UsageRow(who, jobs, images) for who, (jobs, images) in ordered[:10]]

        return TeamStats(
            days=days, jobs=len(rows),
            images=sum(totals[1] for totals in users.values()),
            by_status=dict(by_status), failures=failures.most_common(5),
            by_user=ranked(users), by_role=ranked(roles),
        )

    async def is_moderator(self, actor: Actor) -> bool:
        def check(session: Session) -> bool:
            team, _ = repo.ensure_actor(session, actor)
            return self._is_moderator(team, actor)

        return await self.db.run(check)

    # --- helpers -----------------------------------------------------------------------------

    def _validate_params(self, params: RenderParams) -> None:
        params.validate(max_steps=self.policy.max_steps, max_guidance=self.policy.max_guidance)

    def _resolve_model(self, model: str | None) -> str:
        if not model:
            return self.policy.default_model
        allowed = self.policy.available_models or (self.policy.default_model,)
        if model not in allowed:
            raise UsageError(f"Unknown model {model!r}; available: {', '.join(allowed)}.")
        return model

    @staticmethod
    def _resolve_seed(seed: int | None) -> int:
        if seed is None:
            return secrets.randbelow(MAX_SEED + 1)
        if not 0 <= seed <= MAX_SEED:
            raise UsageError(f"--seed must be between 0 and {MAX_SEED}, got {seed}.")
        return seed

    def _refuse_blocked_terms(self, session: Session, team: Team, prompt: str) -> None:
        term = blocked_term_in(prompt, repo.blocked_terms(session, team))
        if term is not None:
            raise PromptRejected(term)

    def _valid_term(self, term: str) -> str:
        normalised = normalise_term(term or "")
        if not normalised:
            raise UsageError("Say which term to block, e.g. `block-term gore`.")
        if len(normalised) > self.policy.max_term_chars:
            raise UsageError(f"A blocked term can be at most {self.policy.max_term_chars} characters.")
        return normalised

    @staticmethod
    def _is_moderator(team: Team, actor: Actor) -> bool:
        return actor.is_platform_admin or bool(
            set(actor.role_ids) & set(team.moderator_role_ids or [])
        )

    def _moderator(self, session: Session, actor: Actor, what: str) -> tuple[Team, User]:
        team, user = repo.ensure_actor(session, actor)
        if not self._is_moderator(team, actor):
            raise NotPermitted(
                f"Only moderators can {what} (server admins, or members of a moderator role)."
            )
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
            policy = QuotaPolicy(team_id=team.id, scope=target.kind, subject=subject, bonus=0,
                                 unlimited=False)
            session.add(policy)
        return policy

    def _audit(
        self, session: Session, team: Team, actor: User, action: str, target: str,
        details: dict[str, Any],
    ) -> None:
        session.add(AuditLogEntry(team_id=team.id, actor_id=actor.id, action=action,
                                  target=target, details=details, created_at=self.clock()))
        log.info("moderation: %s by %s on %s %s", action, actor.external_id, target, details)

    def _find_generation(
        self, session: Session, team: Team, user: User, generation_id: int | None,
        *, lock: bool = False, done_only: bool = False,
    ) -> Generation:
        if generation_id is None:
            generation = repo.latest_generation(session, user, done_only=done_only)
            if generation is None:
                if done_only:
                    raise NotFound("You have no finished jobs yet: start with `/imagine <prompt>`.")
                raise NotFound("You have no jobs yet: start with `/imagine <prompt>`.")
            if lock:
                generation = repo.get_generation(session, generation.id, lock=True)
            return generation
        generation = repo.get_generation(session, generation_id, lock=lock)
        # Another team's job is reported as missing: ids must not leak across teams.
        if generation is None or generation.team_id != team.id:
            raise NotFound(f"There is no job #{generation_id} in this team.")
        return generation

    def _resolve_image(self, session: Session, team: Team, user: User, ref: ImageRef):
        generation = self._find_generation(session, team, user, ref.generation_id, done_only=True)
        status = GenerationStatus(generation.status)
        if status != GenerationStatus.DONE:
            if status in (GenerationStatus.QUEUED, GenerationStatus.RUNNING):
                raise InvalidState(f"Job #{generation.id} is still {status}; try again when it is done.")
            raise InvalidState(f"Job #{generation.id} {status} and has no images.")
        count = len(generation.images)
        index = ref.index
        if index is None:
            if count != 1:
                raise UsageError(
                    f"Job #{generation.id} has {count} images: say which, e.g. `{generation.id}:2`."
                )
            index = 1
        image = next((i for i in generation.images if i.index == index), None)
        if image is None:
            raise NotFound(f"Job #{generation.id} has no image {index} (it has {count}).")
        return image


@dataclass(frozen=True)
class _NewJob:
    kind: GenerationKind
    prompt: str
    negative_prompt: str | None
    params: RenderParams
    seed: int
    model_id: str
    image_ref: ImageRef | None = None
    reroll_of: int | None = None
    extra_refs: tuple[ImageRef, ...] = ()  # a blend's sources after the first
    weights: tuple[float, ...] = ()
    extra_params: dict[str, Any] = field(default_factory=dict)


def build_thread_tree(root_id: int, members: list[GenerationView]) -> ThreadNode:
    """Arrange a lineage's jobs as a tree: each job hangs under the job its parent image is from."""
    by_id = {m.id: m for m in members}
    children: dict[int, list[GenerationView]] = {m.id: [] for m in members}
    for member in members:
        if member.id == root_id:
            continue
        parent = member.parent_generation_id
        if parent is None and "reroll_of" in member.params:
            parent = member.params["reroll_of"]
        children[parent if parent in by_id else root_id].append(member)

    def node(view: GenerationView) -> ThreadNode:
        return ThreadNode(view, tuple(node(c) for c in sorted(children[view.id], key=lambda v: v.id)))

    return node(by_id[root_id])
