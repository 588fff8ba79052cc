"""Turn RenderJobs into PNGs with an unCLIP pipeline, loaded once per worker process.

A batch is a list of compatible jobs (same operation and steps: see `batch_key`); every image
gets its own CPU generator seeded from its job, so a job renders the same images alone or in a
batch (up to floating-point differences of batched kernels).
"""

from __future__ import annotations

import io
import logging
import platform
import time
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np
import torch
from PIL import Image

from engine.images import encode_png, make_grid
from engine.render.jobs import (
    ProgressFn,
    RenderAborted,
    RenderedImage,
    RenderError,
    RenderJob,
    RenderResult,
)
from engine.render.loader import ModelSpec, load_unclip, weights_hash

log = logging.getLogger(__name__)

#: Karlo's defaults; a model folder's imagine.json may override them.
DEFAULT_STEPS = {"prior_steps": 25, "decoder_steps": 25, "super_res_steps": 7}
DEFAULT_GUIDANCE = {"prior_guidance": 4.0, "decoder_guidance": 8.0}
DEFAULT_STRENGTH = 1.0

_ASPECTS = {"1:1": 1.0, "4:3": 4 / 3, "3:4": 3 / 4, "16:9": 16 / 9, "9:16": 9 / 16, "3:2": 1.5, "2:3": 2 / 3}


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
    """(3, H, W) in [-1, 1], as the decoder sees images."""
    with Image.open(io.BytesIO(data)) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


def crop_to_aspect(image: Image.Image, aspect: str) -> Image.Image:
    """unCLIP decoders draw squares: other aspects are centre crops of the square."""
    ratio = _ASPECTS.get(aspect, 1.0)
    if ratio == 1.0:
        return image
    width, height = image.size
    if ratio > 1:
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


def batch_key(job: RenderJob) -> tuple:
    """Jobs with the same key can share one pipeline call."""
    p = job.params
    return (
        job.operation,
        p.get("prior_steps"), p.get("decoder_steps"), p.get("super_res_steps"),
        p.get("prior_guidance"), p.get("decoder_guidance"),
        p.get("strength") if job.operation == "variation" else None,
    )


class UnCLIPRenderer:
    """One loaded unCLIP model and the operations the bot offers on it."""

    def __init__(self, spec: ModelSpec, pipe, *, device: str, dtype: torch.dtype) -> None:
        self.spec = spec
        self.pipe = pipe
        self.device = device
        self.dtype = dtype
        self.model_id = spec.name
        self.weights_sha256 = weights_hash(spec.path)
        self.versions = library_versions()

    @classmethod
    def load(cls, spec: ModelSpec, *, device: str = "auto", dtype: str = "auto",
             cpu_offload: bool = False, compile: bool = False) -> UnCLIPRenderer:
        device = choose_device(device)
        torch_dtype = choose_dtype(dtype, device)
        started = time.perf_counter()
        pipe = load_unclip(spec, device="cpu" if cpu_offload else device, dtype=torch_dtype)
        if cpu_offload and device.startswith("cuda"):
            pipe.enable_model_cpu_offload()
        if compile:
            pipe.decoder = torch.compile(pipe.decoder)
            if pipe.super_res_first is not None:
                pipe.super_res_first = torch.compile(pipe.super_res_first)
        log.info("model %s loaded on %s (%s) in %.0f ms", spec.name, device, torch_dtype,
                 (time.perf_counter() - started) * 1000)
        return cls(spec, pipe, device=device, dtype=torch_dtype)

    # --- settings of one job -----------------------------------------------------------------

    def resolved_settings(self, job: RenderJob) -> dict[str, Any]:
        """The steps, guidance and strength a job runs with (its own, else the model's)."""
        defaults = {**DEFAULT_STEPS, **DEFAULT_GUIDANCE, **self.spec.defaults}
        settings = {key: job.params.get(key) or defaults[key] for key in (*DEFAULT_STEPS, *DEFAULT_GUIDANCE)}
        for key in ("prior_guidance", "decoder_guidance"):
            if job.params.get(key) is not None:  # 0 is a valid guidance
                settings[key] = job.params[key]
        settings["strength"] = job.params.get("strength") or defaults.get("strength", DEFAULT_STRENGTH)
        return settings

    def render(self, job: RenderJob, progress: ProgressFn) -> RenderResult:
        if job.operation == "upscale":
            return self._upscale(job, progress)
        result = self.render_batch([job], [progress])[0]
        if result is None:
            raise RenderAborted()
        return result

    def _source_embedding(self, job: RenderJob) -> torch.Tensor:
        """The CLIP image embedding a variation or blend decodes."""
        if job.operation == "variation":
            if job.source_embeddings:
                return torch.from_numpy(embedding_from_bytes(job.source_embeddings[0]))
            if not job.source_images:
                raise RenderError("the variation has no source image")
            if self.pipe.image_encoder is None:
                raise RenderError(
                    f"model {self.model_id} has no CLIP image encoder, so it cannot vary uploaded images"
                )
            with Image.open(io.BytesIO(job.source_images[0])) as picture:
                return self.pipe.encode_images([picture.convert("RGB")])[0].float().cpu()
        if job.operation == "blend":
            vectors = [torch.from_numpy(embedding_from_bytes(e)) for e in job.source_embeddings]
            return weighted_slerp(vectors, list(job.weights) or [1.0] * len(vectors))
        raise RenderError(f"unknown operation {job.operation!r}")

    def _upscale(self, job: RenderJob, progress: ProgressFn) -> RenderResult:
        if not self.pipe.has_upsampler:
            raise RenderError(f"model {self.model_id} has no upsampler, so it cannot upscale")
        if not job.source_images:
            raise RenderError("the image to upscale is missing from storage")
        settings = self.resolved_settings(job)
        source = png_to_tensor(job.source_images[0]).unsqueeze(0)
        seed = job.image_seeds()[0]
        arrays = self.pipe.upscale(
            source, [torch.Generator("cpu").manual_seed(seed)],
            num_inference_steps=settings["super_res_steps"],
            callback=lambda stage, done, total: progress(done / total, stage),
        )
        picture = Image.fromarray((arrays[0] * 255).round().astype(np.uint8))
        info = self._info(job, settings, "none", False)
        png = encode_png(picture, {**info, "seed": seed, "index": 1})
        embedding = None
        if self.pipe.image_encoder is not None:
            embedding = embedding_to_bytes(self.pipe.encode_images([picture])[0].float().cpu())
        elif job.source_embeddings:
            embedding = job.source_embeddings[0]  # the same picture, larger
        image = RenderedImage(1, png, picture.width, picture.height, seed, embedding)
        return RenderResult([image], None, info)

    def render_batch(self, jobs: list[RenderJob], progress_fns: list[ProgressFn]) -> list[RenderResult | None]:
        """Render compatible jobs in one pipeline call; None for a job aborted on the way."""
        if len({batch_key(j) for j in jobs}) != 1:
            raise ValueError("render_batch needs jobs with the same batch_key")
        first = jobs[0]
        settings = self.resolved_settings(first)
        prompts: list[str] = []
        negatives: list[str | None] = []
        generators: list[torch.Generator] = []
        embeds: list[torch.Tensor] = []
        inits: list[torch.Tensor] = []
        for job in jobs:
            source = self._source_embedding(job) if job.operation != "text2image" else None
            for seed in job.image_seeds():
                generators.append(torch.Generator("cpu").manual_seed(seed))
                negatives.append(job.negative_prompt)
                if source is None:
                    prompts.append(job.prompt)
                else:
                    # Variations and blends decode an image embedding alone, with no text, as
                    # in the unCLIP paper.
                    prompts.append("")
                    embeds.append(source)
                    if job.operation == "variation" and job.source_images:
                        inits.append(png_to_tensor(job.source_images[0]))

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
        use_init = bool(inits) and settings["strength"] < 1.0
        output = self.pipe(
            prompts,
            generators,
            negative_prompts=negatives,
            image_embeds=torch.stack(embeds) if embeds else None,
            init_images=torch.stack(inits) if use_init else None,
            strength=settings["strength"] if use_init else 1.0,
            prior_num_inference_steps=settings["prior_steps"],
            decoder_num_inference_steps=settings["decoder_steps"],
            super_res_num_inference_steps=settings["super_res_steps"],
            prior_guidance_scale=settings["prior_guidance"],
            decoder_guidance_scale=settings["decoder_guidance"],
            callback=on_step,
        )
        pictures = [
            Image.fromarray((array * 255).round().astype(np.uint8)) for array in output.images
        ]
        # Keep the CLIP image embedding of what was actually drawn when the model has an image
        # encoder (variations of it then follow the picture); else the embedding it was drawn from.
        if self.pipe.image_encoder is not None:
            stored = self.pipe.encode_images(pictures).float().cpu()
            embedding_source = "clip_image_encoder"
        else:
            stored = output.image_embeds
            embedding_source = "prior_output" if first.operation == "text2image" else "source"
        elapsed_ms = round((time.perf_counter() - started) * 1000)
        log.info("rendered %d job(s), %d image(s) in %d ms", len(jobs), len(pictures), elapsed_ms)

        results: list[RenderResult | None] = []
        offset = 0
        for i, job in enumerate(jobs):
            count = job.n
            if aborted[i]:
                results.append(None)
            else:
                info = self._info(job, settings, embedding_source, use_init)
                images = []
                for k in range(count):
                    picture = crop_to_aspect(pictures[offset + k], job.params.get("aspect", "1:1"))
                    seed = job.image_seeds()[k]
                    png = encode_png(picture, {**info, "seed": seed, "index": k + 1})
                    images.append(RenderedImage(
                        index=k + 1, png=png, width=picture.width, height=picture.height,
                        seed=seed, embedding=embedding_to_bytes(stored[offset + k]),
                    ))
                grid = None
                if count > 1:
                    grid = make_grid(
                        [Image.open(io.BytesIO(image.png)) for image in images], info
                    )
                results.append(RenderResult(images, grid, info))
            offset += count
        return results

    def _info(self, job: RenderJob, settings: dict[str, Any], embedding_source: str,
              used_init: bool) -> dict[str, Any]:
        return {
            "software": "imagine-bot",
            "job": job.generation_id,
            "operation": job.operation,
            "prompt": job.prompt,
            "negative_prompt": job.negative_prompt or "",
            "job_seed": job.seed,
            "model": self.model_id,
            "model_description": self.spec.description,
            "weights_sha256": self.weights_sha256,
            "scheduler": type(self.pipe.decoder_scheduler).__name__,
            "steps": {k: settings[k] for k in DEFAULT_STEPS},
            "guidance": {k: settings[k] for k in DEFAULT_GUIDANCE},
            "strength": settings["strength"] if used_init else 1.0,
            "aspect": job.params.get("aspect", "1:1"),
            "embedding": embedding_source,
            "device": self.device,
            "dtype": str(self.dtype).replace("torch.", ""),
            "versions": self.versions,
        }


def load_renderer(model: str, data_dir, *, backend: str = "unclip", device: str = "auto",
                  dtype: str = "auto", cpu_offload: bool = False, compile: bool = False,
                  torch_threads: int = 0):
    """The renderer a worker process uses: loaded once, kept warm."""
    if backend == "noop":
        from engine.render.noop import NoopRenderer

        return NoopRenderer()
    if torch_threads:
        torch.set_num_threads(torch_threads)
    from engine.render.loader import resolve_model

    spec = resolve_model(model, data_dir)
    if spec.family != "unclip":
        from engine.render.loader import ModelUnavailable

        raise ModelUnavailable(f"{spec.path}: the {spec.family} family is not supported by this version")
    return UnCLIPRenderer.load(spec, device=device, dtype=dtype, cpu_offload=cpu_offload,
                               compile=compile)
