"""The unCLIP family: Karlo-layout models (kakaobrain/karlo-v1-alpha, its image-variations
sibling, the built-in model) through our own pipeline, `engine/render/unclip.py`.

The pipeline draws squares at the decoder's size (then the super-resolution stage's): other
aspects are centre crops, done by the base when it packages the pictures. An upscale runs the
super-resolution stage alone on the stored picture.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from engine.domain.edits import EditSpec
from engine.images import encode_png
from engine.render.base import (
    BaseRenderer,
    Drawn,
    choose_device,
    choose_dtype,
    embedding_from_bytes,
    png_to_tensor,
    to_pictures,
)
from engine.render.editing import canvas_and_mask, composite
from engine.render.loader import ModelSpec, load_unclip
from engine.render.speedups import Speedups, apply_speedups
from engine.render.types import ProgressFn, RenderError, RenderJob, StepFn

if TYPE_CHECKING:
    from engine.render.unclip import ImagineUnCLIPPipeline

log = logging.getLogger(__name__)


class UnCLIPRenderer(BaseRenderer):
    """Karlo-layout models through our own pipeline (engine/render/unclip.py)."""

    family = "unclip"
    #: Karlo's defaults; a model folder's imagine.json may override them.
    defaults = {
        "prior_steps": 25,
        "decoder_steps": 25,
        "super_res_steps": 7,
        "prior_guidance": 4.0,
        "decoder_guidance": 8.0,
        "strength": 1.0,
        "super_res_strength": 1.0,
        "edit_decoder_guidance": 4.0,
        "prior": "diffusion",
        "ar_temperature": 1.0,
    }
    step_keys = ("prior_steps", "decoder_steps", "super_res_steps")
    guidance_keys = ("prior_guidance", "decoder_guidance")
    # Edits guide the decoder less: with the kept part forced at every step, strong guidance
    # fights it (built-in model, bench/model_quality.py --quick: the edited half follows its
    # prompt in 0.75 of images at guidance 8, 0.92 at 2, 4 and 6).
    model_keys = ("super_res_strength", "edit_decoder_guidance", "ar_temperature")
    #: Which prior draws the image embedding (`--prior`): recorded in the manifest like the rest.
    choice_keys = ("prior",)

    def __init__(self, spec: ModelSpec, pipe: ImagineUnCLIPPipeline, *, device: str, dtype: torch.dtype) -> None:
        super().__init__(spec, device=device, dtype=dtype)
        self.pipe = pipe

    @classmethod
    def load(
        cls,
        spec: ModelSpec,
        *,
        device: str = "auto",
        dtype: str = "auto",
        cpu_offload: bool = False,
        speedups: Speedups | None = None,
    ) -> UnCLIPRenderer:
        device = choose_device(device)
        torch_dtype = choose_dtype(dtype, device)
        started = time.perf_counter()
        pipe = load_unclip(spec, device="cpu" if cpu_offload else device, dtype=torch_dtype)
        if cpu_offload and device.startswith("cuda"):
            pipe.enable_model_cpu_offload()
        networks = {
            "prior": pipe.prior,
            "decoder": pipe.decoder,
            "super_res_first": pipe.super_res_first,
            "super_res_last": pipe.super_res_last,
        }
        # Every one of them runs at fixed shapes: 77 tokens, the 64 px decoder, the upsampler's
        # fixed size (aspects are centre crops afterwards).
        report = apply_speedups(
            networks,
            speedups or Speedups(),
            device=device,
            fixed_shape=networks,
            offloaded=cpu_offload and device.startswith("cuda"),
        )
        if report.applied or report.skipped:
            log.info("model %s speed-ups: %s", spec.name, report)
        log.info(
            "model %s loaded on %s (%s) in %.0f ms",
            spec.name,
            device,
            torch_dtype,
            (time.perf_counter() - started) * 1000,
        )
        renderer = cls(spec, pipe, device=device, dtype=torch_dtype)
        renderer.speedups = report
        return renderer

    @property
    def scheduler_name(self) -> str:
        return type(self.pipe.decoder_scheduler).__name__

    def encode_images(self, pictures: list[Image.Image]) -> torch.Tensor:
        if self.pipe.image_encoder is None:
            raise RenderError(f"model {self.model_id} has no CLIP image encoder, so it cannot vary uploaded images")
        return self.pipe.encode_images(pictures)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self.pipe.encode_text(texts).embeds

    def _draw(
        self, jobs: list[RenderJob], settings: dict[str, Any], generators: list[torch.Generator], on_step: StepFn
    ) -> Drawn:
        if jobs[0].operation == "edit":
            return self._draw_edit(jobs[0], settings, generators, on_step)
        if jobs[0].operation == "text2image" and self.pipe.prior is None:
            raise RenderError(
                f"model {self.model_id} has no prior (an image-variations model): it can vary "
                "images but not draw from text"
            )
        prompts: list[str] = []
        negatives: list[str | None] = []
        embeds: list[torch.Tensor] = []
        inits: list[torch.Tensor] = []
        sources: list[torch.Tensor | None]
        for job in jobs:
            if job.operation == "strip":
                sources = list(self.strip_embeddings(job))
            elif job.operation == "text2image":
                sources = [None] * job.n
            else:
                sources = [self.source_embedding(job)] * job.n
            for source in sources:
                negatives.append(job.negative_prompt)
                if source is None:
                    prompts.append(job.prompt)
                    continue
                # Variations, blends and edits decode an image embedding with no text, as in
                # the unCLIP paper.
                prompts.append("")
                embeds.append(source)
                if job.operation == "variation" and job.source_images:
                    inits.append(png_to_tensor(job.source_images[0]))
        use_init = len(inits) == len(prompts) and settings["strength"] < 1.0
        if settings["prior"] == "ar" and self.pipe.ar_prior is None and jobs[0].operation == "text2image":
            raise RenderError(f"model {self.model_id} has no autoregressive prior: use --prior diffusion or none")
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
            super_res_strength=settings["super_res_strength"],
            prior_guidance_scale=settings["prior_guidance"],
            decoder_guidance_scale=settings["decoder_guidance"],
            prior=settings["prior"],
            ar_temperature=settings["ar_temperature"],
            callback=on_step,
        )
        pictures = to_pictures(output.images)
        # Keep the CLIP image embedding of what was actually drawn when the model has an image
        # encoder (variations of it then follow the picture); else the embedding it came from.
        if self.pipe.image_encoder is not None:
            return Drawn(pictures, self.pipe.encode_images(pictures).float().cpu(), "clip_image_encoder", use_init)
        embedding_source = "prior_output" if jobs[0].operation == "text2image" else "source"
        return Drawn(pictures, output.image_embeds, embedding_source, use_init)

    def _draw_edit(
        self, job: RenderJob, settings: dict[str, Any], generators: list[torch.Generator], on_step: StepFn
    ) -> Drawn:
        """An edit, zoom-out or pan: the decoder draws the canvas's open part (RePaint), the
        upsampler the whole, and the result is composited over the canvas (editing.py)."""
        spec = EditSpec.from_dict(job.params["edit"])
        if not job.source_images:
            raise RenderError("the image to edit is missing from storage")
        if spec.op == "region" and self.pipe.prior is None:
            raise RenderError(f"model {self.model_id} has no prior: it cannot draw a region from a prompt")
        with Image.open(io.BytesIO(job.source_images[0])) as opened:
            source = opened.convert("RGB")
        size = self.pipe.output_size if self.pipe.has_upsampler else self.pipe.decoder_size
        canvas, keep = canvas_and_mask(source, spec, (size, size))
        known = png_to_tensor(encode_png(canvas))[None].repeat(job.n, 1, 1, 1)
        keep_masks = torch.from_numpy(keep)[None, None].repeat(job.n, 1, 1, 1)
        # A region is drawn from its prompt (through the prior); a zoom-out or pan continues the
        # picture, so it decodes the source's own image embedding, like a variation.
        embeds = (
            None
            if spec.op == "region"
            else torch.stack([self.source_embedding(replace(job, operation="variation"))] * job.n)
        )
        output = self.pipe(
            [job.prompt if spec.op == "region" else ""] * job.n,
            generators,
            negative_prompts=[job.negative_prompt] * job.n,
            image_embeds=embeds,
            known_images=known,
            keep_masks=keep_masks,
            prior_num_inference_steps=settings["prior_steps"],
            decoder_num_inference_steps=settings["decoder_steps"],
            super_res_num_inference_steps=settings["super_res_steps"],
            super_res_strength=settings["super_res_strength"],
            prior_guidance_scale=settings["prior_guidance"],
            decoder_guidance_scale=job.params.get("decoder_guidance") or settings["edit_decoder_guidance"],
            callback=on_step,
        )
        pictures = [composite(picture, canvas, keep) for picture in to_pictures(output.images)]
        if self.pipe.image_encoder is not None:
            return Drawn(pictures, self.pipe.encode_images(pictures).float().cpu(), "clip_image_encoder")
        return Drawn(pictures, output.image_embeds, "prior_output" if spec.op == "region" else "source")

    def _upscale(self, job: RenderJob, settings: dict[str, Any], progress: ProgressFn) -> Drawn:
        if not self.pipe.has_upsampler:
            raise RenderError(f"model {self.model_id} has no upsampler, so it cannot upscale")
        if not job.source_images:
            raise RenderError("the image to upscale is missing from storage")
        arrays = self.pipe.upscale(
            png_to_tensor(job.source_images[0]).unsqueeze(0),
            [torch.Generator("cpu").manual_seed(job.draw_seeds()[0])],
            num_inference_steps=settings["super_res_steps"],
            strength=settings["super_res_strength"],
            callback=lambda stage, done, total: progress(done / total, stage),
        )
        pictures = to_pictures(arrays)
        if self.pipe.image_encoder is not None:
            return Drawn(pictures, self.pipe.encode_images(pictures).float().cpu(), "clip_image_encoder")
        if job.source_embeddings:  # the same picture, larger
            return Drawn(pictures, torch.from_numpy(embedding_from_bytes(job.source_embeddings[0]))[None], "source")
        raise RenderError("the image to upscale has no stored embedding")
