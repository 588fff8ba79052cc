"""imagine-bot's own unCLIP pipeline: CLIP text encoder → prior → decoder → super-resolution.

Why our own file instead of diffusers' `UnCLIPPipeline`: that pipeline lives in diffusers'
deprecated folder (frozen at 0.33.1, and its `from_pretrained` cannot find `UnCLIPTextProjModel`
in 0.42), and it lacks what the bot needs: a generator *per image* (so jobs can be batched and
still match their solo render), image embeddings in (variations, blends, text diffs), a decoder
that can start from a noised source image (variation strength), the paper's three ways from text
to image embedding (diffusion prior, autoregressive prior, no prior: its ablation), negative
prompts and a per-step progress callback. It is built only from
diffusers' maintained components (PriorTransformer, UNet2DConditionModel, UNet2DModel,
UnCLIPScheduler) plus `UnCLIPTextProjModel`, and reads top to bottom like a diffusers pipeline.

This module assembles the pipeline — its components, the CLIP encoders, and the stages run in
order with their step counts and progress — and engine/render/unclip_sampling.py holds each
stage's denoising loop (prior, decoder with variation strength and masked edits, upsampler).

The folder layout is Karlo's (kakaobrain/karlo-v1-alpha), optionally with `image_encoder/` and
`feature_extractor/` as in karlo-v1-alpha-image-variations; the built-in model uses it too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

# Each class from the module that defines it: for a type checker, diffusers' top level exports
# placeholder classes (its TYPE_CHECKING block imports the no-torch dummies first).
from diffusers.models.transformers.prior_transformer import PriorTransformer
from diffusers.models.unets.unet_2d import UNet2DModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_unclip import UnCLIPScheduler
from transformers import (
    CLIPImageProcessor,
    CLIPTextModelWithProjection,
    CLIPVisionModelWithProjection,
    PreTrainedTokenizerBase,
)

from engine.render import unclip_sampling as sampling
from engine.render.ar_prior import AutoregressivePrior
from engine.render.unclip_sampling import TextConditioning

if TYPE_CHECKING:
    from PIL import Image

#: callback(stage, steps done over all stages, total steps over all stages)
ProgressCallback = Callable[[str, int, int], None]


@dataclass
class UnCLIPOutput:
    images: np.ndarray  # (B, H, W, 3) float in [0, 1]
    image_embeds: torch.Tensor  # (B, D): the CLIP image embedding each image was decoded from


class ImagineUnCLIPPipeline(DiffusionPipeline):
    """Text → image, embedding → image, and image → embedding with an unCLIP stack."""

    # diffusers declares it `= None` with no annotation, so mypy takes None for its type.
    model_cpu_offload_seq = "text_encoder->image_encoder->prior->text_proj->decoder->super_res_first->super_res_last"  # type: ignore[assignment]
    _optional_components = [
        "prior",
        "prior_scheduler",
        "ar_prior",
        "image_encoder",
        "feature_extractor",
        "super_res_first",
        "super_res_last",
        "super_res_scheduler",
    ]

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,  # CLIP's BPE, or the built-in model's word-start one
        text_encoder: CLIPTextModelWithProjection,
        text_proj: UnCLIPTextProjModel,
        decoder: UNet2DConditionModel,
        decoder_scheduler: UnCLIPScheduler,
        prior: PriorTransformer | None = None,
        prior_scheduler: UnCLIPScheduler | None = None,
        super_res_first: UNet2DModel | None = None,
        super_res_last: UNet2DModel | None = None,
        super_res_scheduler: UnCLIPScheduler | None = None,
        image_encoder: CLIPVisionModelWithProjection | None = None,
        feature_extractor: CLIPImageProcessor | None = None,
        ar_prior: AutoregressivePrior | None = None,
    ) -> None:
        super().__init__()
        self.register_modules(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            text_proj=text_proj,
            decoder=decoder,
            decoder_scheduler=decoder_scheduler,
            prior=prior,
            prior_scheduler=prior_scheduler,
            super_res_first=super_res_first,
            super_res_last=super_res_last,
            super_res_scheduler=super_res_scheduler,
            image_encoder=image_encoder,
            feature_extractor=feature_extractor,
            ar_prior=ar_prior,
        )

    # --- sizes -------------------------------------------------------------------------------

    @property
    def decoder_size(self) -> int:
        return int(self.decoder.config.sample_size)

    @property
    def output_size(self) -> int:
        if self.super_res_first is None:
            return self.decoder_size
        return int(self.super_res_first.config.sample_size)

    @property
    def embedding_dim(self) -> int:
        return int(self.text_encoder.config.projection_dim)

    @property
    def has_upsampler(self) -> bool:
        return self.super_res_first is not None

    # --- 1. encode text and images -----------------------------------------------------------

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> TextConditioning:
        """CLIP text embeddings for each prompt (truncated to the tokenizer's length)."""
        inputs = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        device = self._execution_device
        output = self.text_encoder(inputs.input_ids.to(device))
        return TextConditioning(
            embeds=output.text_embeds,
            hidden_states=output.last_hidden_state,
            mask=inputs.attention_mask.bool().to(device),
        )

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """CLIP image embeddings of PIL images (needs `image_encoder` and `feature_extractor`)."""
        if self.image_encoder is None or self.feature_extractor is None:
            raise ValueError("this model has no CLIP image encoder: it cannot encode images")
        pixels = self.feature_extractor(images=images, return_tensors="pt").pixel_values
        dtype = next(self.image_encoder.parameters()).dtype
        pixels = pixels.to(device=self._execution_device, dtype=dtype)
        return self.image_encoder(pixels).image_embeds

    # --- 2. prior: text embedding → image embedding ------------------------------------------

    @torch.no_grad()
    def sample_ar_prior(
        self,
        text: TextConditioning,
        uncond: TextConditioning,
        generators: list[torch.Generator],
        *,
        guidance_scale: float,
        temperature: float = 1.0,
        on_step: Callable[[], None] | None = None,
    ) -> torch.Tensor:
        """The autoregressive prior's image embeddings (engine/render/ar_prior.py)."""
        if self.ar_prior is None:
            raise ValueError("this model has no autoregressive prior")
        return self.ar_prior.sample(
            (text.embeds, text.hidden_states, text.mask),
            (uncond.embeds, uncond.hidden_states, uncond.mask),
            generators,
            guidance_scale=guidance_scale,
            temperature=temperature,
            on_step=on_step,
        ).to(text.embeds.dtype)

    @torch.no_grad()
    def sample_prior(
        self,
        text: TextConditioning,
        uncond: TextConditioning,
        generators: list[torch.Generator],
        *,
        num_inference_steps: int,
        guidance_scale: float,
        on_step: Callable[[], None] | None = None,
    ) -> torch.Tensor:
        if self.prior is None:
            raise ValueError("this model has no prior: it can only decode image embeddings")
        return sampling.sample_prior(
            self.prior,
            self.prior_scheduler,
            text,
            uncond,
            generators,
            device=self._execution_device,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            on_step=on_step,
        )

    # --- 3. decoder: image embedding (+ text) → small image ----------------------------------

    def decoder_steps(self, num_inference_steps: int, strength: float) -> int:
        """How many denoising steps run for a given strength (1.0: all of them)."""
        return sampling.strength_steps(num_inference_steps, strength)

    @torch.no_grad()
    def decode(
        self,
        image_embeds: torch.Tensor,
        text: TextConditioning,
        uncond: TextConditioning,
        generators: list[torch.Generator],
        *,
        num_inference_steps: int,
        guidance_scale: float,
        init_images: torch.Tensor | None = None,
        strength: float = 1.0,
        known: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
        on_step: Callable[[], None] | None = None,
    ) -> torch.Tensor:
        """Draw each image embedding at the decoder's size. With `known` (B, 3, H, W in [-1, 1])
        and `keep` (B, 1, H, W in [0, 1]), the kept part is the known picture at every step
        (RePaint): after each step it is replaced by `known` noised to where the sampler is."""
        return sampling.decode(
            self.decoder,
            self.decoder_scheduler,
            self.text_proj,
            image_embeds,
            text,
            uncond,
            generators,
            device=self._execution_device,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            init_images=init_images,
            strength=strength,
            known=known,
            keep=keep,
            on_step=on_step,
        )

    # --- 4. super-resolution -----------------------------------------------------------------

    @torch.no_grad()
    def super_resolve(
        self,
        small: torch.Tensor,
        generators: list[torch.Generator],
        *,
        num_inference_steps: int,
        size: tuple[int, int] | None = None,
        strength: float = 1.0,
        on_step: Callable[[], None] | None = None,
    ) -> torch.Tensor:
        """Upsample (B, 3, h, w) images in [-1, 1] to `size` (default: the model's output size).

        The upsampler is fully convolutional, so it also runs above its training size: that is
        how a finished image is upscaled again by the same factor. `strength` < 1 starts part-way
        down the noise schedule from the bicubic upscale instead of from pure noise (Karlo: 1.0),
        so colours and layout come from the low-res image and the upsampler only adds detail.
        """
        return sampling.super_resolve(
            self.super_res_first,
            self.super_res_last,
            self.super_res_scheduler,
            small,
            generators,
            device=self._execution_device,
            size=size or (self.output_size, self.output_size),
            num_inference_steps=num_inference_steps,
            strength=strength,
            on_step=on_step,
        )

    @property
    def upscale_factor(self) -> float:
        return self.output_size / self.decoder_size

    @torch.no_grad()
    def upscale(
        self,
        images: torch.Tensor,
        generators: list[torch.Generator],
        *,
        num_inference_steps: int = 7,
        strength: float = 1.0,
        callback: ProgressCallback | None = None,
    ) -> np.ndarray:
        """Upscale finished images by the model's own factor with its upsampler."""
        if not self.has_upsampler:
            raise ValueError("this model has no upsampler: it cannot upscale")
        height, width = images.shape[-2:]
        factor = self.upscale_factor
        done = 0

        def on_step() -> None:
            nonlocal done
            done += 1
            if callback:
                callback("upscale", done, self.decoder_steps(num_inference_steps, strength))

        result = self.super_resolve(
            images,
            generators,
            num_inference_steps=num_inference_steps,
            size=(round(height * factor), round(width * factor)),
            strength=strength,
            on_step=on_step,
        )
        return (result.float() * 0.5 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).numpy()

    # --- the whole stack ---------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompts: list[str],
        generators: list[torch.Generator],
        *,
        negative_prompts: list[str | None] | None = None,
        image_embeds: torch.Tensor | None = None,
        prior: str = "diffusion",
        init_images: torch.Tensor | None = None,
        strength: float = 1.0,
        known_images: torch.Tensor | None = None,
        keep_masks: torch.Tensor | None = None,
        prior_num_inference_steps: int = 25,
        decoder_num_inference_steps: int = 25,
        super_res_num_inference_steps: int = 7,
        super_res_strength: float = 1.0,
        prior_guidance_scale: float = 4.0,
        decoder_guidance_scale: float = 8.0,
        ar_temperature: float = 1.0,
        callback: ProgressCallback | None = None,
    ) -> UnCLIPOutput:
        """Render one image per prompt, each with its own generator.

        Args:
            prompts: one per image ("" for a pure variation of `image_embeds`).
            generators: one per image; an image depends only on its own generator and inputs,
                so a batch of jobs renders the same images as each job alone.
            negative_prompts: replace the empty unconditional text in classifier-free guidance.
            image_embeds: skip the prior and decode these CLIP image embeddings (variations,
                blends, text diffs).
            prior: which prior turns the text into an image embedding: "diffusion", "ar" (the
                paper's autoregressive prior, where the model has one) or "none" (the CLIP *text*
                embedding goes to the decoder directly: the paper's no-prior baseline).
            init_images: (B, 3, H, W) in [-1, 1]; with strength < 1 the decoder starts from them.
            known_images, keep_masks: an edit's canvas (B, 3, H, W in [-1, 1]) and where it is
                kept (B, 1, H, W in [0, 1]); the decoder draws only the rest (see `decode`).
            super_res_strength: < 1 starts the upsampler from the noised bicubic upscale (see
                `super_resolve`); models that need it say so in their imagine.json.
            callback: called after every denoising step of every stage.
        """
        batch = len(prompts)
        if len(generators) != batch:
            raise ValueError(f"generators: need one per prompt ({batch}), got {len(generators)}")
        if image_embeds is not None and image_embeds.shape[0] != batch:
            raise ValueError(f"image_embeds: need {batch} rows, got {image_embeds.shape[0]}")
        negatives = negative_prompts or [None] * batch
        if len(negatives) != batch:
            raise ValueError(f"negative_prompts: need one per prompt ({batch}), got {len(negatives)}")

        if prior not in ("diffusion", "ar", "none"):
            raise ValueError(f"prior: diffusion, ar or none, got {prior!r}")
        run_prior = image_embeds is None and prior != "none"
        decoder_steps = (
            self.decoder_steps(decoder_num_inference_steps, strength)
            if init_images is not None
            else decoder_num_inference_steps
        )
        prior_steps = (
            (self.ar_prior.n_components if self.ar_prior else 0) if prior == "ar" else prior_num_inference_steps
        )
        total = (
            (prior_steps if run_prior else 0)
            + decoder_steps
            + (self.decoder_steps(super_res_num_inference_steps, super_res_strength) if self.has_upsampler else 0)
        )
        done = 0

        def stepper(stage: str) -> Callable[[], None]:
            def on_step() -> None:
                nonlocal done
                done += 1
                if callback:
                    callback(stage, done, total)

            return on_step

        # 1. encode the prompts, and the unconditional (negative) text for guidance
        text = self.encode_text(prompts)
        uncond = self.encode_text([n or "" for n in negatives])

        # 2. prior: sample a CLIP image embedding for each prompt
        if image_embeds is None:
            if run_prior and prior == "ar":
                image_embeds = self.sample_ar_prior(
                    text,
                    uncond,
                    generators,
                    guidance_scale=prior_guidance_scale,
                    temperature=ar_temperature,
                    on_step=stepper("prior"),
                )
            elif run_prior:
                image_embeds = self.sample_prior(
                    text,
                    uncond,
                    generators,
                    num_inference_steps=prior_num_inference_steps,
                    guidance_scale=prior_guidance_scale,
                    on_step=stepper("prior"),
                )
            else:
                image_embeds = text.embeds
        image_embeds = image_embeds.to(self._execution_device)

        # 3. decoder: draw each embedding at the decoder's size
        small = self.decode(
            image_embeds,
            text,
            uncond,
            generators,
            num_inference_steps=decoder_num_inference_steps,
            guidance_scale=decoder_guidance_scale,
            init_images=init_images,
            strength=strength,
            known=known_images,
            keep=keep_masks,
            on_step=stepper("decoder"),
        )

        # 4. super-resolution to the output size
        images = small
        if self.has_upsampler:
            images = self.super_resolve(
                small,
                generators,
                num_inference_steps=super_res_num_inference_steps,
                strength=super_res_strength,
                on_step=stepper("upsampler"),
            )

        images = (images.float() * 0.5 + 0.5).clamp(0, 1)
        return UnCLIPOutput(images=images.cpu().permute(0, 2, 3, 1).numpy(), image_embeds=image_embeds.float().cpu())
