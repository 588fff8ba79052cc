"""What the worker asks a renderer for, and what it gets back: plain data, no torch.

Named `types`, not `jobs`: `engine.worker.jobs` is the Celery job body that sends these to a
renderer, and two modules called `jobs` made every import and traceback ambiguous.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.domain.limits import MAX_SEED

#: progress(fraction 0..1, stage name); may raise to abort the render (a cancelled job).
ProgressFn = Callable[[float, str], None]
#: on_step(stage, steps done over all stages, total steps over all stages): a family's pipeline
#: reports each denoising step through it.
StepFn = Callable[[str, int, int], None]


class RenderAborted(Exception):
    """Raised from a progress callback to stop a render (the job was cancelled)."""


class RenderError(Exception):
    """A job this model cannot render (no image encoder, no upsampler, ...): shown to the user."""


@dataclass(frozen=True)
class RenderJob:
    generation_id: int
    operation: str  # text2image | variation | textdiff | blend | strip | upscale | edit
    prompt: str
    negative_prompt: str | None
    seed: int
    n: int
    params: dict[str, Any] = field(default_factory=dict)
    #: CLIP image embeddings of the source image(s), float32 little-endian bytes.
    source_embeddings: tuple[bytes, ...] = ()
    #: PNG bytes of the source image(s) (variation strength, upscale, uploads).
    source_images: tuple[bytes, ...] = ()
    #: The weights (`weights_sha256`) that made the source embedding, where known: another
    #: model's image tower has its own embedding space, so a renderer with other weights encodes
    #: the source image again instead (a variation of an image drawn before a model update).
    source_weights: str | None = None
    weights: tuple[float, ...] = ()
    #: Which claim of the job this render belongs to (its files are named after it, so a
    #: render that lost its job never overwrites the files of the one that stored it).
    attempt: int = 1

    def image_seeds(self) -> list[int]:
        """Image k of a job is rendered from seed + k - 1, so each image is reproducible alone."""
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.n)]

    def draw_seeds(self) -> list[int]:
        """The seed of each image drawn: an interpolation strip keeps one seed for every frame,
        so only the embedding changes from frame to frame."""
        return [self.seed] * self.n if self.operation == "strip" else self.image_seeds()


@dataclass(frozen=True)
class RenderedImage:
    index: int
    png: bytes
    width: int
    height: int
    seed: int
    embedding: bytes | None  # float32 little-endian CLIP image embedding

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.png).hexdigest()

    @property
    def embedding_dim(self) -> int | None:
        return None if self.embedding is None else len(self.embedding) // 4


@dataclass(frozen=True)
class RenderResult:
    images: list[RenderedImage]
    grid_png: bytes | None
    #: The reproducibility record stored with the job and written into every PNG.
    info: dict[str, Any]


def batch_key(job: RenderJob) -> tuple:
    """Jobs with the same key can share one pipeline call (the worker's dynamic batching)."""
    p = job.params
    return (
        job.operation,
        p.get("prior_steps"),
        p.get("decoder_steps"),
        p.get("super_res_steps"),
        p.get("prior_guidance"),
        p.get("decoder_guidance"),
        p.get("prior"),  # one pipeline call runs one prior
        p.get("strength") if job.operation == "variation" else None,
        p.get("aspect", "1:1"),
        bool(job.negative_prompt),  # a negative prompt changes how the prior is batched
        # Upscales, strips and text diffs run alone (their inputs differ in shape or kind).
        job.generation_id if job.operation in ("upscale", "strip", "textdiff", "edit") else None,
    )
