"""The renderer base every model family builds on (what diffusers' `DiffusionPipeline` is to its
pipelines): turn RenderJobs into PNGs, with the model loaded once per worker process.

`BaseRenderer` holds what every family shares — resolving a job's settings, fanning progress
out to the jobs of a batch (and dropping a job cancelled mid-way), cropping to the aspect, the
reproducibility record (`info`) written into every PNG, grids, embeddings — and a family
supplies `_draw` (one pipeline call for a batch) and, if it can, `_upscale`. The helpers every
family needs (device and dtype choice, embedding bytes, pictures from arrays, slerp) and the one
table of aspect ratios live here too.

Families (`engine.render.families`) import this module and never each other;
`engine.render.factory` chooses one for a model, as diffusers' auto pipelines do.

A batch is a list of compatible jobs (see `batch_key`); every image gets its own CPU
generator seeded from its job, so a job renders the same images alone or in a batch (up to the
floating-point differences of batched kernels).
"""

from __future__ import annotations

import io
import logging
import math
import platform
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np
import torch
from PIL import Image

from engine.domain.types import ASPECTS
from engine.images import encode_png, make_grid, make_strip
from engine.render.loader import ModelSpec, weights_hash
from engine.render.speedups import SpeedupReport
from engine.render.types import (
    ProgressFn,
    RenderAborted,
    RenderedImage,
    RenderError,
    RenderJob,
    RenderResult,
    StepFn,
    batch_key,
)

log = logging.getLogger(__name__)

#: Width over height of every aspect a job may ask for. The names are the domain's (the options
#: the chat commands offer), so an aspect is added in one place; an unknown name draws square.
ASPECT_RATIOS: dict[str, float] = {
    name: int(width) / int(height) for name in ASPECTS for width, height in [name.split(":")]
}
#: How far a text diff turns the image embedding toward the text direction by default (the
#: unCLIP paper shows 0.25-0.5 keeps the picture recognisable).
DEFAULT_EDIT_AMOUNT = 0.35


# --- small shared helpers ----------------------------------------------------------------------


def choose_device(name: str) -> str:
    if name != "auto":
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def choose_dtype(name: str, device: str) -> torch.dtype:
    if name != "auto":
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("torch", "diffusers", "transformers", "imagine-bot"):
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def embedding_to_bytes(vector: torch.Tensor | np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def embedding_from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4").copy()


def png_to_tensor(data: bytes) -> torch.Tensor:
    """(3, H, W) in [-1, 1], as decoders see images."""
    with Image.open(io.BytesIO(data)) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


def to_pictures(arrays: np.ndarray) -> list[Image.Image]:
    """(B, H, W, 3) floats in [0, 1] → PIL images."""
    return [Image.fromarray((array * 255).round().astype(np.uint8)) for array in arrays]


def aspect_ratio(aspect: str) -> float:
    return ASPECT_RATIOS.get(aspect, 1.0)


def size_for(aspect: str, base: int) -> tuple[int, int]:
    """(height, width), multiples of 64, with about base² pixels and the asked aspect: the size
    a family that draws any multiple of 64 (Kandinsky) renders an aspect at."""
    ratio = aspect_ratio(aspect)
    width = max(64, round(base * math.sqrt(ratio) / 64) * 64)
    height = max(64, round(base / math.sqrt(ratio) / 64) * 64)
    return height, width


def crop_to_aspect(image: Image.Image, aspect: str) -> Image.Image:
    """Square decoders draw squares: other aspects are centre crops of the square. A family
    that draws the aspect itself (Kandinsky, in multiples of 64) loses only what rounding added."""
    ratio = aspect_ratio(aspect)
    width, height = image.size
    if abs(width / height - ratio) < 0.02:
        return image
    if ratio > width / height:
        new_height = max(1, round(width / ratio))
        top = (height - new_height) // 2
        return image.crop((0, top, width, top + new_height))
    new_width = max(1, round(height * ratio))
    left = (width - new_width) // 2
    return image.crop((left, 0, left + new_width, height))


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of two embeddings (directions slerped, lengths lerped)."""
    a_norm, b_norm = a.norm(), b.norm()
    a_unit, b_unit = a / a_norm, b / b_norm
    omega = torch.arccos(torch.clamp((a_unit * b_unit).sum(), -1.0, 1.0))
    if omega.abs() < 1e-4:
        direction = (1 - t) * a_unit + t * b_unit
    else:
        direction = (torch.sin((1 - t) * omega) * a_unit + torch.sin(t * omega) * b_unit) / torch.sin(omega)
    return direction / direction.norm() * ((1 - t) * a_norm + t * b_norm)


def weighted_slerp(vectors: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """Blend several embeddings: fold them in one by one, each by its share of the weight so far."""
    result, total = vectors[0], weights[0]
    for vector, weight in zip(vectors[1:], weights[1:], strict=True):
        if weight <= 0:
            continue
        if total <= 0:
            result, total = vector, weight
            continue
        result = slerp(result, vector, weight / (total + weight))
        total += weight
    return result


def text_diff(image: torch.Tensor, old_text: torch.Tensor, new_text: torch.Tensor, amount: float) -> torch.Tensor:
    """The unCLIP paper's text diff: turn an image embedding toward (new text - old text)."""
    direction = new_text - old_text
    direction = direction / direction.norm() * image.norm()
    return slerp(image, direction, amount)


@dataclass
class Drawn:
    """What a family's pipeline call returns for a batch."""

    pictures: list[Image.Image]
    embeddings: torch.Tensor  # (B, D): what each picture's stored embedding is
    embedding_source: str  # clip_image_encoder | prior_output | source
    used_init: bool = False


# --- the shared renderer -----------------------------------------------------------------------


class BaseRenderer(ABC):
    """One loaded model and the operations the bot offers on it."""

    family = "base"
    #: Settings a job may override, with the family's defaults (a model's imagine.json wins).
    defaults: dict[str, Any] = {}
    step_keys: tuple[str, ...] = ()
    guidance_keys: tuple[str, ...] = ()
    #: Sampling settings a model's imagine.json sets (no chat option offers them).
    model_keys: tuple[str, ...] = ()
    #: Named choices a job may make (not numbers), e.g. the unCLIP family's `prior`.
    choice_keys: tuple[str, ...] = ()

    def __init__(self, spec: ModelSpec, *, device: str, dtype: torch.dtype) -> None:
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.model_id = spec.name
        self.weights_sha256 = weights_hash(spec.path)
        self.versions = library_versions()
        # What engine.render.speedups applied at load, and why it skipped the rest.
        self.speedups = SpeedupReport()

    # Every family draws; the rest it implements if its model can (else the job is refused
    # with a message the user sees).
    @abstractmethod
    def _draw(
        self, jobs: list[RenderJob], settings: dict[str, Any], generators: list[torch.Generator], on_step: StepFn
    ) -> Drawn:
        """One pipeline call for a batch of compatible jobs, their images in job order."""

    def _upscale(self, job: RenderJob, settings: dict[str, Any], progress: ProgressFn) -> Drawn:
        raise RenderError(f"model {self.model_id} cannot upscale")  # pragma: no cover

    def encode_images(self, pictures: list[Image.Image]) -> torch.Tensor:
        raise RenderError(f"model {self.model_id} has no CLIP image encoder")  # pragma: no cover

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        raise RenderError(f"model {self.model_id} has no CLIP text encoder")  # pragma: no cover

    @property
    def scheduler_name(self) -> str:
        return "unknown"

    def gpu_memory_bytes(self) -> int:
        """Memory held by tensors on this worker's GPU (0 on the CPU)."""
        return torch.cuda.memory_allocated() if self.device.startswith("cuda") else 0

    # --- settings of one job -----------------------------------------------------------------

    def resolved_settings(self, job: RenderJob) -> dict[str, Any]:
        """The steps, guidance and strength a job runs with (its own, else the model's)."""
        defaults = {**self.defaults, **self.spec.defaults}
        chosen = job.params.get("prior")
        if chosen not in (None, "diffusion") and "prior" not in self.choice_keys:
            raise RenderError(
                f"model {self.model_id} has only its diffusion prior: --prior {chosen} is for unCLIP models"
            )
        settings = {}
        for key in (*self.step_keys, *self.guidance_keys, "strength", *self.model_keys, *self.choice_keys):
            value = job.params.get(key)
            settings[key] = defaults.get(key) if value is None else value
        return settings

    # --- source embeddings -------------------------------------------------------------------

    def source_embedding(self, job: RenderJob) -> torch.Tensor:
        """The CLIP image embedding a variation, blend or text diff decodes."""
        if job.operation in ("variation", "textdiff"):
            foreign = job.source_weights not in (None, self.weights_sha256) and bool(job.source_images)
            if job.source_embeddings and not foreign:
                vector = torch.from_numpy(embedding_from_bytes(job.source_embeddings[0]))
            elif job.source_images:
                with Image.open(io.BytesIO(job.source_images[0])) as picture:
                    vector = self.encode_images([picture.convert("RGB")])[0].float().cpu()
            else:
                raise RenderError("the variation has no source image")
            if job.operation == "textdiff":
                old, new = self.encode_texts([job.params.get("edit_from", ""), job.params["edit_toward"]])
                amount = float(job.params.get("edit_amount", DEFAULT_EDIT_AMOUNT))
                vector = text_diff(vector, old.float().cpu(), new.float().cpu(), amount)
            return vector
        if job.operation in ("blend", "strip"):
            vectors = [torch.from_numpy(embedding_from_bytes(e)) for e in job.source_embeddings]
            return weighted_slerp(vectors, list(job.weights) or [1.0] * len(vectors))
        raise RenderError(f"unknown operation {job.operation!r}")

    def strip_embeddings(self, job: RenderJob) -> list[torch.Tensor]:
        """Evenly spaced points on the slerp path from the first source to the second."""
        a, b = (torch.from_numpy(embedding_from_bytes(e)) for e in job.source_embeddings[:2])
        frames = job.n
        return [slerp(a, b, i / (frames - 1)) for i in range(frames)]

    # --- rendering ---------------------------------------------------------------------------

    def render(self, job: RenderJob, progress: ProgressFn) -> RenderResult:
        result = self.render_batch([job], [progress])[0]
        if result is None:
            raise RenderAborted()
        return result

    def warm_up(self, max_images: int) -> float:
        """Render two throwaway text-to-image batches (1 image, then up to a grid of 4 twice) so
        that compiling the speed-ups happens at worker start, not in the first user's job: after
        two batch shapes dynamo compiles the batch dimension as symbolic, and later sizes reuse
        that code. Returns the seconds it took; a model that cannot draw from text is skipped."""
        started = time.perf_counter()
        quiet: ProgressFn = lambda _fraction, _stage: None  # noqa: E731
        grid = min(4, max_images)
        batches = [[RenderJob(0, "text2image", "warm-up", None, 0, 1)]]
        if max_images > 1:
            batches.append(
                [RenderJob(0, "text2image", "warm-up", None, i, grid) for i in range(min(2, max_images // grid))]
            )
        try:
            for jobs in batches:
                self.render_batch(jobs, [quiet] * len(jobs))
        except RenderError as error:
            log.info("warm-up skipped: %s", error)
        return time.perf_counter() - started

    def render_batch(self, jobs: list[RenderJob], progress_fns: list[ProgressFn]) -> list[RenderResult | None]:
        """Render compatible jobs in one pipeline call; None for a job aborted on the way."""
        if len({batch_key(j) for j in jobs}) != 1:
            raise ValueError("render_batch needs jobs with the same batch_key")
        settings = self.resolved_settings(jobs[0])
        aborted = [False] * len(jobs)

        def on_step(stage: str, done: int, total: int) -> None:
            for i, fn in enumerate(progress_fns):
                if aborted[i]:
                    continue
                try:
                    fn(done / total, stage)
                except RenderAborted:
                    aborted[i] = True
            if all(aborted):
                raise RenderAborted()

        started = time.perf_counter()
        if jobs[0].operation == "upscale":
            drawn = self._upscale(jobs[0], settings, lambda f, s: on_step(s, round(f * 100), 100))
        else:
            generators = [torch.Generator("cpu").manual_seed(seed) for job in jobs for seed in job.draw_seeds()]
            drawn = self._draw(jobs, settings, generators, on_step)
        log.info(
            "rendered %d job(s), %d image(s) in %d ms",
            len(jobs),
            len(drawn.pictures),
            round((time.perf_counter() - started) * 1000),
        )
        return self._package(jobs, drawn, settings, aborted)

    def _package(
        self, jobs: list[RenderJob], drawn: Drawn, settings: dict[str, Any], aborted: list[bool]
    ) -> list[RenderResult | None]:
        results: list[RenderResult | None] = []
        offset = 0
        for i, job in enumerate(jobs):
            count = job.n
            if aborted[i]:
                results.append(None)
                offset += count
                continue
            info = self._info(job, settings, drawn.embedding_source, drawn.used_init)
            images = []
            pictures = []
            for k in range(count):
                picture = drawn.pictures[offset + k]
                if job.operation != "upscale":
                    picture = crop_to_aspect(picture, job.params.get("aspect", "1:1"))
                pictures.append(picture)
                seed = job.draw_seeds()[k]
                images.append(
                    RenderedImage(
                        index=k + 1,
                        png=encode_png(picture, {**info, "seed": seed, "index": k + 1}),
                        width=picture.width,
                        height=picture.height,
                        seed=seed,
                        embedding=embedding_to_bytes(drawn.embeddings[offset + k]),
                    )
                )
            grid = None
            if job.operation == "strip":
                grid = make_strip(pictures, info)
            elif count > 1:
                grid = make_grid(pictures, info)
            results.append(RenderResult(images, grid, info))
            offset += count
        return results

    def _info(self, job: RenderJob, settings: dict[str, Any], embedding_source: str, used_init: bool) -> dict[str, Any]:
        info = {
            "software": "imagine-bot",
            "job": job.generation_id,
            "operation": job.operation,
            "prompt": job.prompt,
            "negative_prompt": job.negative_prompt or "",
            "job_seed": job.seed,
            "model": self.model_id,
            "model_family": self.family,
            "model_description": self.spec.description,
            "weights_sha256": self.weights_sha256,
            "scheduler": self.scheduler_name,
            "steps": {k: settings[k] for k in self.step_keys},
            "guidance": {k: settings[k] for k in self.guidance_keys},
            "strength": settings.get("strength") if used_init else 1.0,
            **{key: settings[key] for key in (*self.model_keys, *self.choice_keys)},
            "aspect": job.params.get("aspect", "1:1"),
            "embedding": embedding_source,
            "device": self.device,
            "dtype": str(self.dtype).replace("torch.", ""),
            "versions": self.versions,
        }
        # Compiled or graphed networks match the plain ones only within float tolerance: say so
        # (the cache folder is the operator's business, not the picture's).
        speedups = [line for line in self.speedups.applied if not line.startswith("all: ")]
        if speedups:
            info["speedups"] = speedups
        if job.operation == "textdiff":
            info["edit"] = {
                "from": job.params.get("edit_from", ""),
                "toward": job.params["edit_toward"],
                "amount": job.params.get("edit_amount", DEFAULT_EDIT_AMOUNT),
            }
        if job.operation == "edit":
            # What was drawn and what was kept: the operation and its box, factor or direction.
            info["edit"] = dict(job.params["edit"])
        return info
