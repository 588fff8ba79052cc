"""Submitting jobs: imagine, variations (of a stored image, an upload, or turned toward a text),
blends and interpolation strips, upscales, rerolls.

Every submit follows the same order: validate → (one transaction) refuse banned users and
blocked prompts without charging, reserve quota, write the job row (and, when the reply target
names one, the status message the adapter already posted for it: `"status_message":
{"channel_id", "message_id"}`) → enqueue. If the enqueue fails the job is marked failed and
refunded in a second transaction.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from engine.domain import edits
from engine.domain.errors import (
    InvalidState,
    PromptRejected,
    QueueUnavailable,
    QuotaExceeded,
    UsageError,
    UserBanned,
    UserFacingError,
)
from engine.domain.limits import EDIT_AMOUNT, MAX_SEED, STRIP_FRAMES
from engine.domain.quota import describe_duration, effective_limit
from engine.domain.terms import blocked_term_in
from engine.domain.types import (
    Actor,
    EditRequest,
    GenerationKind,
    GenerationStatus,
    ImageRef,
    ImagineRequest,
    MessageRole,
    RenderParams,
    VariationRequest,
    normalise_prompt,
)
from engine.domain.views import GenerationView, SubmittedJob
from engine.images import decode_upload, encode_png
from engine.service._base import ServiceBase, new_task_id
from engine.store import repo

log = logging.getLogger(__name__)


class Submitting(ServiceBase):
    async def submit_imagine(
        self, actor: Actor, request: ImagineRequest, reply_target: dict[str, Any] | None = None
    ) -> SubmittedJob:
        """Queue a text → image job, charging the actor's quota."""
        prompt = normalise_prompt(request.prompt, max_chars=self.policy.max_prompt_chars)
        negative = None
        if request.negative_prompt is not None and request.negative_prompt.strip():
            negative = normalise_prompt(
                request.negative_prompt,
                max_chars=self.policy.max_prompt_chars,
                what="Negative prompt",
            )
        self._validate_params(request.params)
        model = self._resolve_model(request.model)
        seed = self._resolve_seed(request.seed)
        job = _NewJob(
            kind=GenerationKind.IMAGINE,
            prompt=prompt,
            negative_prompt=negative,
            params=request.params,
            seed=seed,
            model_id=model,
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
            kind=GenerationKind.VARIATION,
            prompt="",
            negative_prompt=None,
            params=request.params,
            seed=seed,
            model_id="",
            image_ref=request.image,
            extra_params=extra,
        )
        return await self._submit(actor, job, reply_target or {})

    async def submit_upload_variation(
        self,
        actor: Actor,
        data: bytes,
        params: RenderParams,
        seed: int | None = None,
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
            kind=GenerationKind.VARIATION,
            prompt="an uploaded image",
            negative_prompt=None,
            params=params,
            seed=self._resolve_seed(seed),
            model_id=self.policy.default_model,
            extra_params={"source_key": key, "source": "upload"},
        )
        try:
            return await self._submit(actor, job, reply_target or {})
        except UserFacingError as error:
            if not isinstance(error, QueueUnavailable):
                await asyncio.to_thread(self.store.delete, key)  # nothing refers to it
            raise

    def _reencode_upload(self, data: bytes) -> bytes:
        picture = decode_upload(data, max_bytes=self.policy.max_upload_bytes, max_pixels=self.policy.max_upload_pixels)
        return encode_png(picture)

    async def submit_blend(
        self,
        actor: Actor,
        images: list[ImageRef],
        weights: list[float] | None = None,
        params: RenderParams | None = None,
        seed: int | None = None,
        reply_target: dict[str, Any] | None = None,
        strip: int | None = None,
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
                kind=GenerationKind.BLEND,
                prompt="",
                negative_prompt=None,
                params=replace(params, n=strip),
                seed=self._resolve_seed(seed),
                model_id="",
                image_ref=images[0],
                extra_refs=(images[1],),
                weights=(1.0, 1.0),
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
            kind=GenerationKind.BLEND,
            prompt="",
            negative_prompt=None,
            params=params,
            seed=self._resolve_seed(seed),
            model_id="",
            image_ref=images[0],
            extra_refs=tuple(images[1:]),
            weights=tuple(weights),
        )
        return await self._submit(actor, job, reply_target or {})

    async def submit_upscale(
        self, actor: Actor, image: ImageRef, reply_target: dict[str, Any] | None = None
    ) -> SubmittedJob:
        """Queue an upscale of one image of a grid (one image of quota)."""
        job = _NewJob(
            kind=GenerationKind.UPSCALE,
            prompt="",
            negative_prompt=None,
            params=RenderParams(n=1),
            seed=self._resolve_seed(None),
            model_id="",
            image_ref=image,
        )
        return await self._submit(actor, job, reply_target or {})

    async def submit_edit(
        self, actor: Actor, request: EditRequest, reply_target: dict[str, Any] | None = None
    ) -> SubmittedJob:
        """Queue an edit of one stored image: a region redrawn from a prompt, a zoom-out or a pan
        (DALL·E 2's edits and outpainting). Checked here, before anything is written or charged."""
        self._validate_params(request.params)
        spec = edits.check(edits.EditSpec.from_dict(request.edit))
        prompt = ""
        if spec.op == "region":
            if request.prompt is None or not request.prompt.strip():
                raise UsageError("Say what to draw in the region, e.g. `/edit 12:3 --region left a red star`.")
            prompt = normalise_prompt(request.prompt, max_chars=self.policy.max_prompt_chars)
        elif request.prompt:
            raise UsageError(
                f"A {'zoom-out' if spec.op == 'zoomout' else 'pan'} continues the picture; it takes no prompt."
            )
        job = _NewJob(
            kind=GenerationKind.EDIT,
            prompt=prompt,
            negative_prompt=None,
            params=request.params,
            seed=self._resolve_seed(request.seed),
            model_id="",
            image_ref=request.image,
            extra_params={"edit": spec.to_dict()},
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
            kind=GenerationKind.REROLL,
            prompt=original.prompt,
            negative_prompt=original.negative_prompt,
            params=params,
            seed=self._resolve_seed(None),
            model_id=original.model_id,
            image_ref=(
                ImageRef(original.parent_generation_id, original.parent_image_index)
                if original.parent_generation_id is not None
                else None
            ),
            reroll_of=original.id,
        )
        return await self._submit(actor, job, reply_target or {})

    async def _submit(self, actor: Actor, job: _NewJob, reply_target: dict[str, Any]) -> SubmittedJob:
        task_id = new_task_id()
        view, position = await self.db.run(self._create_job, actor, job, reply_target, task_id)
        log.info(
            "job %s queued: %s by %s/%s, %d image(s)",
            view.id,
            view.kind,
            actor.platform,
            actor.user_id,
            view.cost,
        )
        try:
            # If the publish still completes after the timeout, the worker finds the job failed
            # and does nothing: the refund below stands.
            await asyncio.wait_for(
                asyncio.to_thread(self.queue.enqueue, view.id, task_id), self.policy.enqueue_timeout_s
            )
        except Exception as error:  # noqa: BLE001 - any broker failure means "queue down"
            log.error("job %s: enqueue failed, refunding: %r", view.id, error)
            await self.db.run(self._fail_enqueue, view.id)
            raise QueueUnavailable() from error
        return SubmittedJob(generation=view, queue_position=position)

    def _create_job(
        self,
        session: Session,
        actor: Actor,
        job: _NewJob,
        reply_target: dict[str, Any],
        task_id: str,
    ) -> tuple[GenerationView, int]:
        """The submit's transaction: for a fresh /imagine four statements — what the checks read
        (`submit_context`), the quota charged (`try_debit`), the job row, its ledger entry."""
        now = self.clock()
        context = repo.submit_context(session, actor)
        if context.banned:
            raise UserBanned(context.ban_reason)

        parent_image = None
        thread_root_id = None
        params = {**job.params.to_dict(), **job.extra_params}
        if job.image_ref is not None:
            # The lookups of a job's images work on the actor's rows (one more statement).
            team, user = repo.ensure_actor(session, actor)
            parent_image = self._resolve_image(session, team, user, job.image_ref)
            parent = parent_image.generation
            thread_root_id = parent.thread_root_id or parent.id
            if not job.prompt:
                job = replace(
                    job,
                    prompt=parent.prompt,
                    negative_prompt=parent.negative_prompt,
                    model_id=parent.model_id,
                )
            elif not job.model_id:  # an edit's region prompt: still drawn by its parent's model
                job = replace(job, model_id=parent.model_id)
            if "edit_toward" in params:
                # The text diff runs from what the parent was asked for, toward the new text.
                described = parent.kind != "blend" and (parent.params or {}).get("source") != "upload"
                params["edit_from"] = parent.prompt if described else ""
                self._refuse_blocked_terms(context, params["edit_toward"])
            if job.extra_refs:  # a blend: its first source is job.image_ref
                sources = [parent_image] + [self._resolve_image(session, team, user, ref) for ref in job.extra_refs]
                params["sources"] = [
                    {"image_id": image.id, "label": f"#{image.generation_id}:{image.index}", "weight": w}
                    for image, w in zip(sources, job.weights, strict=True)
                ]
                labels = [s["label"] for s in params["sources"]]
                job = replace(
                    job,
                    prompt=(
                        f"strip from {labels[0]} to {labels[1]}"
                        if "strip" in params
                        else "blend of " + " + ".join(labels)
                    ),
                )
        self._refuse_blocked_terms(context, job.prompt)

        cost = job.params.n
        self._charge(session, actor, context, cost, now)

        if job.reroll_of is not None:
            params["reroll_of"] = job.reroll_of
        values: dict[str, Any] = {
            "requester_role_ids": list(actor.role_ids),
            "team_id": context.team_id,
            "requester_id": context.user_id,
            "platform": str(actor.platform),
            "kind": str(job.kind),
            "status": str(GenerationStatus.QUEUED),
            "prompt": job.prompt,
            "negative_prompt": job.negative_prompt,
            "params": params,
            "seed": job.seed,
            "model_id": job.model_id,
            "parent_image_id": parent_image.id if parent_image else None,
            "thread_root_id": thread_root_id,
            "reply_target": reply_target,
            "cost": cost,
            "task_id": task_id,
            "progress": 0.0,
            "attempts": 0,
            "render_info": {},
            "created_at": now,
            "updated_at": now,
            "enqueued_at": now,  # published right after this transaction
            "delivery_attempts": 0,
        }
        generation_id = repo.insert_generation(session, values)
        repo.ledger_debit(
            session, context.team_id, context.user_id, generation_id, cost, f"{job.kind} #{generation_id}", now
        )
        status_message = reply_target.get("status_message")
        if status_message:
            # The adapter's status message for this job, posted before the submit (Discord's
            # deferred response): recorded with the job, so a reaction on it finds the job at once.
            repo.record_chat_message(
                session,
                actor.platform,
                str(status_message["channel_id"]),
                str(status_message["message_id"]),
                generation_id,
                None,
                MessageRole.PROGRESS,
            )
        view = repo.new_generation_view(
            generation_id,
            values,
            team_external_id=actor.team_id,
            requester_external_id=actor.user_id,
            requester_name=context.user_name,
            parent=parent_image,
        )
        # The jobs queued or running when the checks read them, and this one.
        return view, context.active_jobs + 1

    def _charge(self, session: Session, actor: Actor, context: repo.SubmitContext, cost: int, now: datetime) -> None:
        """Reserve `cost` images of the actor's quota, or raise QuotaExceeded (nothing charged)."""
        rules = repo.policy_rules(session, context.team_id) if context.has_policies else []
        limit = effective_limit(
            rules,
            user_id=actor.user_id,
            role_ids=actor.role_ids,
            default_limit=self.policy.default_daily_images,
            now=now,
        )
        if repo.try_debit(session, context.team_id, context.user_id, limit, cost, now):
            return
        # Over the limit, or a role reset to apply to the row first: the long way, which also
        # says how much is left.
        team, user = repo.ensure_actor(session, actor)
        status, usage = repo.quota_status(
            session, team, user, actor.role_ids, self.policy.default_daily_images, now, lock=True
        )
        assert usage is not None  # locked: quota_status created today's usage row
        if status.remaining is not None and status.remaining < cost:
            raise QuotaExceeded(cost, status.remaining, describe_duration(status.resets_at - now))
        usage.used += cost

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

    # --- checks ------------------------------------------------------------------------------

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

    @staticmethod
    def _refuse_blocked_terms(context: repo.SubmitContext, prompt: str) -> None:
        term = blocked_term_in(prompt, context.blocked_terms)
        if term is not None:
            raise PromptRejected(term)


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
