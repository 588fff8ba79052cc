"""The Kandinsky 2.2 family: diffusers' maintained prior (text → CLIP image embedding) and
MoVQ-latent decoder pipelines, behind the same renderer base as unCLIP (`engine.render.base`).

A model is named by its decoder folder (`KandinskyV22Pipeline`, e.g. a local copy of
kandinsky-community/kandinsky-2-2-decoder); the prior comes from IMAGINE_RENDER_PRIOR_MODEL or,
by default, kandinsky-community/kandinsky-2-2-prior in the local Hugging Face cache.

Kandinsky draws any size that is a multiple of 64, so aspects are rendered, not cropped; an
upscale re-draws the image's own embedding at twice the size from the enlarged picture
(image-to-image), which is the family's "larger decoder size".
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
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
    size_for,
    to_pictures,
)
from engine.render.editing import canvas_and_mask, composite
from engine.render.loader import (
    ModelSpec,
    ModelUnavailable,
    quiet_libraries,
    resolve_model,
    set_offline,
)
from engine.render.speedups import Speedups, apply_speedups
from engine.render.types import ProgressFn, RenderError, RenderJob, StepFn

if TYPE_CHECKING:
    from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2 import KandinskyV22Pipeline
    from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2_inpainting import KandinskyV22InpaintPipeline
    from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2_prior import KandinskyV22PriorPipeline
    from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput

log = logging.getLogger(__name__)

#: diffusers' callback_on_step_end(pipe, step index, timestep, tensors) -> tensors; the pipelines
#: may replace the latents with what it returns.
StepEndCallback = Callable[["DiffusionPipeline", int, torch.Tensor, dict[str, Any]], dict[str, Any]]

DEFAULT_PRIOR = "kandinsky-community/kandinsky-2-2-prior"


class KandinskyRenderer(BaseRenderer):
    """Kandinsky 2.2 models through diffusers' prior and decoder pipelines."""

    family = "kandinsky22"
    defaults = {
        "prior_steps": 25,
        "decoder_steps": 50,
        "prior_guidance": 4.0,
        "decoder_guidance": 4.0,
        "strength": 1.0,
        "size": 512,
    }
    step_keys = ("prior_steps", "decoder_steps")
    guidance_keys = ("prior_guidance", "decoder_guidance")

    def __init__(
        self,
        spec: ModelSpec,
        prior_pipe: KandinskyV22PriorPipeline,
        decoder_pipe: KandinskyV22Pipeline,
        *,
        device: str,
        dtype: torch.dtype,
        inpaint_pipe: KandinskyV22InpaintPipeline | None = None,
    ) -> None:
        super().__init__(spec, device=device, dtype=dtype)
        from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2_img2img import KandinskyV22Img2ImgPipeline

        self.prior_pipe = prior_pipe
        self.decoder_pipe = decoder_pipe
        self.inpaint_pipe = inpaint_pipe
        # Image-to-image shares the decoder's modules: no second copy in memory.
        self.img2img_pipe = KandinskyV22Img2ImgPipeline(**decoder_pipe.components)
        self.img2img_pipe.set_progress_bar_config(disable=True)
        # The prior encodes a black image for every unconditional (negative) embedding it needs:
        # the same tensor every time, so compute it once per process.
        zero = prior_pipe.get_zero_embed(1)

        def cached_zero_embed(batch_size: int = 1, device: torch.device | str | None = None) -> torch.Tensor:
            return zero.to(device or zero.device).repeat(batch_size, 1)

        prior_pipe.get_zero_embed = cached_zero_embed  # type: ignore[method-assign]
        self.zero_embed = zero

    @classmethod
    def load(
        cls,
        spec: ModelSpec,
        data_dir: Path,
        *,
        prior_model: str | None = None,
        inpaint_model: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        cpu_offload: bool = False,
        speedups: Speedups | None = None,
    ) -> KandinskyRenderer:
        set_offline()
        quiet_libraries()
        from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2 import KandinskyV22Pipeline
        from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2_inpainting import KandinskyV22InpaintPipeline
        from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2_prior import KandinskyV22PriorPipeline

        device = choose_device(device)
        torch_dtype = choose_dtype(dtype, device)
        # The prior: configured, else named by the decoder folder's imagine.json, else the
        # community prior from the local Hugging Face cache.
        named = spec.meta.get("prior")
        prior_name = prior_model or (str((spec.path / named).resolve()) if named else DEFAULT_PRIOR)
        prior_spec = resolve_model(prior_name, data_dir)
        started = time.perf_counter()
        try:
            prior_pipe = KandinskyV22PriorPipeline.from_pretrained(prior_spec.path, dtype=torch_dtype)
            decoder_pipe = KandinskyV22Pipeline.from_pretrained(spec.path, dtype=torch_dtype)
        except Exception as error:
            raise ModelUnavailable(
                f"cannot load Kandinsky 2.2 from {spec.path} + {prior_spec.path}: {error}"
            ) from error
        inpaint_pipe = None
        if inpaint_model:
            inpaint_spec = resolve_model(inpaint_model, data_dir)
            if inpaint_spec.family != "kandinsky22-inpaint":
                raise ModelUnavailable(
                    f"IMAGINE_RENDER_INPAINT_MODEL {inpaint_model!r} is a {inpaint_spec.family} folder, "
                    "not a Kandinsky 2.2 inpainting decoder (KandinskyV22InpaintPipeline)"
                )
            try:
                inpaint_pipe = KandinskyV22InpaintPipeline.from_pretrained(inpaint_spec.path, dtype=torch_dtype)
            except Exception as error:
                raise ModelUnavailable(
                    f"cannot load the inpainting decoder from {inpaint_spec.path}: {error}"
                ) from error
        for pipe in (prior_pipe, decoder_pipe, *([inpaint_pipe] if inpaint_pipe else [])):
            pipe.set_progress_bar_config(disable=True)
            if cpu_offload and device.startswith("cuda"):
                pipe.enable_model_cpu_offload()
            else:
                pipe.to(device)
        # The decoder's shape follows the asked size (aspects are rendered, not cropped): CUDA
        # graphs would keep one graph per size and bucket, so only the prior is fixed-shape.
        report = apply_speedups(
            {"prior": prior_pipe.prior, "decoder": decoder_pipe.unet, "movq": decoder_pipe.movq},
            speedups or Speedups(),
            device=device,
            fixed_shape=("prior",),
            offloaded=cpu_offload and device.startswith("cuda"),
        )
        if report.applied or report.skipped:
            log.info("Kandinsky 2.2 speed-ups: %s", report)
        log.info(
            "Kandinsky 2.2 loaded on %s (%s) in %.0f ms", device, torch_dtype, (time.perf_counter() - started) * 1000
        )
        renderer = cls(spec, prior_pipe, decoder_pipe, device=device, dtype=torch_dtype, inpaint_pipe=inpaint_pipe)
        renderer.speedups = report
        return renderer

    @property
    def scheduler_name(self) -> str:
        return type(self.decoder_pipe.scheduler).__name__

    @property
    def base_size(self) -> int:
        return int({**self.defaults, **self.spec.defaults}["size"])

    def encode_images(self, pictures: list[Image.Image]) -> torch.Tensor:
        prior = self.prior_pipe
        pixels = prior.image_processor(pictures, return_tensors="pt").pixel_values
        pixels = pixels.to(device=prior.image_encoder.device, dtype=prior.image_encoder.dtype)
        with torch.no_grad():
            return prior.image_encoder(pixels).image_embeds

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        prior = self.prior_pipe
        tokens = prior.tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=prior.tokenizer.model_max_length,
            return_tensors="pt",
        )
        with torch.no_grad():
            return prior.text_encoder(tokens.input_ids.to(prior.text_encoder.device)).text_embeds

    def _draw(
        self, jobs: list[RenderJob], settings: dict[str, Any], generators: list[torch.Generator], on_step: StepFn
    ) -> Drawn:
        if jobs[0].operation == "edit":
            return self._draw_edit(jobs[0], settings, generators, on_step)
        height, width = size_for(jobs[0].params.get("aspect", "1:1"), self.base_size)
        first = jobs[0]
        prior_steps = settings["prior_steps"] if first.operation == "text2image" else 0
        total = prior_steps + settings["decoder_steps"]
        done = [0]

        def step(stage: str) -> StepEndCallback:
            def callback(pipe: DiffusionPipeline, i: int, t: torch.Tensor, kwargs: dict[str, Any]) -> dict[str, Any]:
                done[0] += 1
                on_step(stage, done[0], total)
                return kwargs

            return callback

        if first.operation == "text2image":
            prompts = [job.prompt for job in jobs for _ in range(job.n)]
            negatives = [job.negative_prompt or "" for job in jobs for _ in range(job.n)]
            has_negative = any(job.negative_prompt for job in jobs)
            # With a negative prompt the prior also samples the negative's embedding, doubling
            # its batch: those draws get generators of their own (seeded apart from the images').
            prior_generators = generators + (
                [torch.Generator("cpu").manual_seed(g.initial_seed() ^ 0x5EED) for g in generators]
                if has_negative
                else []
            )
            prior_out = self.prior_pipe(
                prompt=prompts,
                negative_prompt=negatives if has_negative else None,
                num_inference_steps=settings["prior_steps"],
                guidance_scale=settings["prior_guidance"],
                generator=prior_generators,
                callback_on_step_end=step("prior"),
            )
            image_embeds, negative_embeds = prior_out.image_embeds, prior_out.negative_image_embeds
            init = None
        else:
            vectors: list[torch.Tensor] = []
            for job in jobs:
                if job.operation == "strip":
                    vectors.extend(self.strip_embeddings(job))
                else:
                    vectors.extend([self.source_embedding(job)] * job.n)
            image_embeds = torch.stack(vectors).to(self.device, self.dtype)
            negative_embeds = self.zero_embed.to(self.device, self.dtype).repeat(len(vectors), 1)
            init = self._init_images(jobs, settings, height, width)

        common = {
            "image_embeds": image_embeds,
            "negative_image_embeds": negative_embeds,
            "height": height,
            "width": width,
            "num_inference_steps": settings["decoder_steps"],
            "guidance_scale": settings["decoder_guidance"],
            "generator": generators,
            "output_type": "np",
            "callback_on_step_end": step("decoder"),
        }
        if init is not None:
            output = self._img2img(image=init, strength=settings["strength"], **common)
        else:
            output = self.decoder_pipe(**common)
        pictures = to_pictures(cast(np.ndarray, output.images))  # output_type="np"
        # The picture's own CLIP image embedding: later variations follow what was drawn.
        return Drawn(pictures, self.encode_images(pictures).float().cpu(), "clip_image_encoder", init is not None)

    def _draw_edit(
        self, job: RenderJob, settings: dict[str, Any], generators: list[torch.Generator], on_step: StepFn
    ) -> Drawn:
        """An edit, zoom-out or pan: with an inpainting decoder configured, diffusers'
        KandinskyV22InpaintPipeline draws the open part; otherwise the plain decoder does, the
        canvas encoded to MoVQ latents and, after every denoising step, the kept part of the
        latents replaced by the canvas's noised to the next step (RePaint). Either way the
        picture is then composited over the canvas, so what is kept stays exactly the source's."""
        spec = EditSpec.from_dict(job.params["edit"])
        if not job.source_images:
            raise RenderError("the image to edit is missing from storage")
        with Image.open(io.BytesIO(job.source_images[0])) as opened:
            source = opened.convert("RGB")
        size = self.base_size
        canvas, keep = canvas_and_mask(source, spec, (size, size))
        steps = settings["decoder_steps"]
        prior_steps = settings["prior_steps"] if spec.op == "region" else 0
        total, done = prior_steps + steps, [0]

        def count(stage: str) -> None:
            done[0] += 1
            on_step(stage, done[0], total)

        def prior_step(pipe: DiffusionPipeline, i: int, t: torch.Tensor, kwargs: dict[str, Any]) -> dict[str, Any]:
            count("prior")
            return kwargs

        if spec.op == "region":
            prior_out = self.prior_pipe(
                prompt=[job.prompt] * job.n,
                num_inference_steps=prior_steps,
                guidance_scale=settings["prior_guidance"],
                generator=generators,
                callback_on_step_end=prior_step,
            )
            image_embeds = prior_out.image_embeds
        else:
            image_embeds = torch.stack([self.source_embedding(replace(job, operation="variation"))] * job.n)
        image_embeds = image_embeds.to(self.device, self.dtype)
        negative = self.zero_embed.to(self.device, self.dtype).repeat(job.n, 1)
        if self.inpaint_pipe is not None:

            def decoder_step(
                pipe: DiffusionPipeline, i: int, t: torch.Tensor, kwargs: dict[str, Any]
            ) -> dict[str, Any]:
                count("decoder")
                return kwargs

            # Typed as Any: diffusers annotates `image` as one picture and callback_on_step_end
            # as the old (int, int) callback; its code takes lists and the (pipe, i, t, kwargs) form.
            inpaint: Any = self.inpaint_pipe
            inpainted = inpaint(
                image_embeds=image_embeds,
                # One canvas and mask per image: the pipeline pairs them with the embeddings.
                image=[canvas] * job.n,
                # diffusers >= 0.19: white (1) is repainted, black (0) kept; `keep` is the reverse.
                mask_image=[(1.0 - keep).astype(np.float32)] * job.n,
                negative_image_embeds=negative,
                height=size,
                width=size,
                num_inference_steps=steps,
                guidance_scale=settings["decoder_guidance"],
                generator=generators,
                output_type="np",
                callback_on_step_end=decoder_step,
            )
            pictures = [composite(p, canvas, keep) for p in to_pictures(cast(np.ndarray, inpainted.images))]
            return Drawn(pictures, self.encode_images(pictures).float().cpu(), "clip_image_encoder")
        pipe = self.decoder_pipe
        movq = pipe.movq
        pixels = png_to_tensor(encode_png(canvas))[None]  # [-1, 1], as MoVQ encodes
        with torch.no_grad():
            known = movq.encode(pixels.to(self.device, movq.dtype))["latents"].to(self.dtype).repeat(job.n, 1, 1, 1)
        latent_size = known.shape[-2:]
        keep_latent = torch.nn.functional.interpolate(
            torch.from_numpy(keep)[None, None], size=latent_size, mode="area"
        ).to(self.device, self.dtype)
        scheduler = pipe.scheduler
        scheduler.set_timesteps(steps, device=self.device)
        timesteps = scheduler.timesteps
        noise = torch.stack([torch.randn(known.shape[1:], generator=g) for g in generators]).to(self.device, self.dtype)
        start = keep_latent * scheduler.add_noise(known, noise, timesteps[:1].repeat(job.n)) + (1 - keep_latent) * noise

        def keep_known(pipe: DiffusionPipeline, i: int, t: torch.Tensor, kwargs: dict[str, Any]) -> dict[str, Any]:
            count("decoder")
            if i + 1 < len(timesteps):
                fresh = torch.stack([torch.randn(known.shape[1:], generator=g) for g in generators])
                target = scheduler.add_noise(
                    known, fresh.to(self.device, self.dtype), timesteps[i + 1 : i + 2].repeat(job.n)
                )
            else:
                target = known
            kwargs["latents"] = keep_latent * target + (1 - keep_latent) * kwargs["latents"]
            return kwargs

        output = pipe(
            image_embeds=image_embeds,
            negative_image_embeds=negative,
            height=size,
            width=size,
            num_inference_steps=steps,
            guidance_scale=settings["decoder_guidance"],
            generator=generators,
            latents=start,
            output_type="np",
            callback_on_step_end=keep_known,
            callback_on_step_end_tensor_inputs=["latents"],
        )
        pictures = [composite(picture, canvas, keep) for picture in to_pictures(output.images)]
        return Drawn(pictures, self.encode_images(pictures).float().cpu(), "clip_image_encoder")

    def _img2img(self, *, height: int, width: int, **kwargs: Any) -> ImagePipelineOutput:
        # diffusers 0.42's KandinskyV22Img2ImgPipeline hands (width, height) to
        # VaeImageProcessor.preprocess(image, height, width) — swapped — and uses them nowhere
        # else: pass them swapped so non-square images keep their orientation.
        # With return_dict (the default) the pipeline returns its output object, not a tuple.
        return cast("ImagePipelineOutput", self.img2img_pipe(height=width, width=height, **kwargs))

    def _init_images(
        self, jobs: list[RenderJob], settings: dict[str, Any], height: int, width: int
    ) -> list[Image.Image] | None:
        """Source pictures for variations with strength < 1 (image-to-image)."""
        if settings["strength"] >= 1.0 or any(j.operation != "variation" or not j.source_images for j in jobs):
            return None
        pictures: list[Image.Image] = []
        for job in jobs:
            with Image.open(io.BytesIO(job.source_images[0])) as picture:
                pictures.extend([picture.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)] * job.n)
        return pictures

    def _upscale(self, job: RenderJob, settings: dict[str, Any], progress: ProgressFn) -> Drawn:
        if not job.source_images:
            raise RenderError("the image to upscale is missing from storage")
        with Image.open(io.BytesIO(job.source_images[0])) as picture:
            source = picture.convert("RGB")
        height = max(64, round(source.height * 2 / 64) * 64)
        width = max(64, round(source.width * 2 / 64) * 64)
        if job.source_embeddings:
            embeds = torch.from_numpy(embedding_from_bytes(job.source_embeddings[0]))[None]
        else:
            embeds = self.encode_images([source]).float().cpu()
        # Image-to-image runs strength x steps of them: keep at least one.
        steps = max(settings["decoder_steps"], 4)

        def report(pipe: DiffusionPipeline, i: int, t: torch.Tensor, kwargs: dict[str, Any]) -> dict[str, Any]:
            progress(min(1.0, (i + 1) / max(1, int(steps * 0.35))), "upscale")
            return kwargs

        output = self._img2img(
            image=[source.resize((width, height), Image.Resampling.BICUBIC)],
            image_embeds=embeds.to(self.device, self.dtype),
            negative_image_embeds=self.zero_embed.to(self.device, self.dtype),
            height=height,
            width=width,
            num_inference_steps=steps,
            # Low strength: keep the picture, redraw its detail at the larger size.
            strength=0.35,
            guidance_scale=settings["decoder_guidance"],
            generator=[torch.Generator("cpu").manual_seed(job.draw_seeds()[0])],
            output_type="np",
            callback_on_step_end=report,
        )
        # Multiples of 64 rarely match twice the source exactly: land on exactly 2x.
        pictures = [
            p.resize((source.width * 2, source.height * 2), Image.Resampling.LANCZOS)
            for p in to_pictures(cast(np.ndarray, output.images))  # output_type="np"
        ]
        return Drawn(pictures, self.encode_images(pictures).float().cpu(), "clip_image_encoder")
