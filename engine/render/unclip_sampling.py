"""The denoising loop of each stage of our unCLIP pipeline (engine/render/unclip.py).

`sample_prior` draws a CLIP image embedding from text, `decode` draws a small image from an image
embedding, `super_resolve` upsamples it. Each is a plain function of the components it runs (a
model and its scheduler) and of one generator per image, so a batch of jobs renders the same
images as each job alone. The decoder is where the edits live: starting part-way down the noise
schedule from a source image (variation strength), and keeping a known part of the picture at
every step while it draws the rest (`keep_known`, RePaint: edits, zoom-outs, pans).

The pipeline holds the components and calls these in order; it is the only caller, and the
methods of the same names are the API (they resolve the device, sizes and defaults).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers.models.transformers.prior_transformer import PriorTransformer
from diffusers.models.unets.unet_2d import UNet2DModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
from diffusers.schedulers.scheduling_unclip import UnCLIPScheduler, UnCLIPSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor
from torch.nn import functional as F


@dataclass
class TextConditioning:
    """CLIP text outputs for a batch: pooled embedding, token states and their mask."""

    embeds: torch.Tensor  # (B, D)
    hidden_states: torch.Tensor  # (B, L, H)
    mask: torch.Tensor  # (B, L) bool

    def __len__(self) -> int:
        return self.embeds.shape[0]


def strength_steps(num_inference_steps: int, strength: float) -> int:
    """How many denoising steps run for a given strength (1.0: all of them); the decoder's and
    the upsampler's strengths both use it."""
    return max(1, min(num_inference_steps, round(num_inference_steps * strength)))


def sample_prior(
    prior: PriorTransformer,
    scheduler: UnCLIPScheduler,
    text: TextConditioning,
    uncond: TextConditioning,
    generators: list[torch.Generator],
    *,
    device: torch.device,
    num_inference_steps: int,
    guidance_scale: float,
    on_step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Text embedding → CLIP image embedding, one per prompt."""
    guided = guidance_scale > 1.0
    proj = torch.cat([uncond.embeds, text.embeds]) if guided else text.embeds
    states = torch.cat([uncond.hidden_states, text.hidden_states]) if guided else text.hidden_states
    mask = torch.cat([uncond.mask, text.mask]) if guided else text.mask

    scheduler.set_timesteps(num_inference_steps, device=device)
    timesteps = scheduler.timesteps
    latents = (
        randn_tensor(
            (len(text), prior.config["embedding_dim"]),
            generator=generators,
            device=device,
            dtype=text.embeds.dtype,
        )
        * scheduler.init_noise_sigma
    )

    for i, t in enumerate(timesteps):
        model_input = torch.cat([latents] * 2) if guided else latents
        predicted = prior(
            model_input,
            timestep=t,
            proj_embedding=proj,
            encoder_hidden_states=states,
            attention_mask=mask,
        ).predicted_image_embedding
        if guided:
            uncond_pred, text_pred = predicted.chunk(2)
            predicted = uncond_pred + guidance_scale * (text_pred - uncond_pred)
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else None
        latents = _previous_sample(scheduler, predicted, t, latents, prev_t, generators)
        if on_step:
            on_step()
    return prior.post_process_latents(latents)


def decode(
    decoder: UNet2DConditionModel,
    scheduler: UnCLIPScheduler,
    text_proj: UnCLIPTextProjModel,
    image_embeds: torch.Tensor,
    text: TextConditioning,
    uncond: TextConditioning,
    generators: list[torch.Generator],
    *,
    device: torch.device,
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
    guided = guidance_scale > 1.0
    prompt_embeds = torch.cat([uncond.embeds, text.embeds]) if guided else text.embeds
    states = torch.cat([uncond.hidden_states, text.hidden_states]) if guided else text.hidden_states
    mask = torch.cat([uncond.mask, text.mask]) if guided else text.mask
    dtype = decoder.dtype

    # unCLIP's decoder conditioning: the image embedding is added to the timestep embedding
    # and projected into extra context tokens in front of the text tokens.
    states, time_embeds = text_proj(
        image_embeddings=image_embeds.to(dtype),
        prompt_embeds=prompt_embeds.to(dtype),
        text_encoder_hidden_states=states.to(dtype),
        do_classifier_free_guidance=guided,
    )
    mask = F.pad(mask, (text_proj.clip_extra_context_tokens, 0), value=True)

    scheduler.set_timesteps(num_inference_steps, device=device)
    timesteps = scheduler.timesteps
    size = int(decoder.config["sample_size"])
    shape = (image_embeds.shape[0], decoder.config["in_channels"], size, size)
    noise = randn_tensor(shape, generator=generators, device=device, dtype=dtype)
    if init_images is not None and strength < 1.0:
        # Variation strength: start part-way down the noise schedule from the source image.
        start = num_inference_steps - strength_steps(num_inference_steps, strength)
        timesteps = timesteps[start:]
        source = F.interpolate(init_images.to(device, dtype), size=(size, size), mode="area")
        latents = _noised(scheduler, source, noise, timesteps[:1].repeat(len(noise)))
    else:
        latents = noise * scheduler.init_noise_sigma
    if known is not None:
        if keep is None:
            raise ValueError("`known` needs `keep`: which part of it to keep")
        known = F.interpolate(known.to(device, dtype), size=(size, size), mode="area")
        keep = F.interpolate(keep.to(device, dtype), size=(size, size), mode="bilinear", align_corners=False)
        latents = keep_known(scheduler, latents, known, keep, timesteps[0], generators)

    for i, t in enumerate(timesteps):
        model_input = torch.cat([latents] * 2) if guided else latents
        noise_pred = decoder(
            sample=model_input,
            timestep=t,
            encoder_hidden_states=states,
            class_labels=time_embeds,
            attention_mask=mask,
        ).sample
        if guided:
            uncond_pred, text_pred = noise_pred.chunk(2)
            uncond_pred, _ = uncond_pred.split(latents.shape[1], dim=1)
            text_pred, variance = text_pred.split(latents.shape[1], dim=1)
            noise_pred = torch.cat([uncond_pred + guidance_scale * (text_pred - uncond_pred), variance], dim=1)
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else None
        latents = _previous_sample(scheduler, noise_pred, t, latents, prev_t, generators)
        if known is not None and keep is not None:
            latents = keep_known(scheduler, latents, known, keep, prev_t, generators)
        if on_step:
            on_step()
    return latents.clamp(-1, 1)


def keep_known(
    scheduler: UnCLIPScheduler,
    latents: torch.Tensor,
    known: torch.Tensor,
    keep: torch.Tensor,
    timestep: torch.Tensor | None,
    generators: list[torch.Generator],
) -> torch.Tensor:
    """The kept part: `known` noised to `timestep` (the clean picture after the last step)."""
    if timestep is None:
        target = known
    else:
        noise = randn_tensor(latents.shape, generator=generators, device=latents.device, dtype=latents.dtype)
        target = _noised(scheduler, known, noise, timestep.reshape(1).repeat(len(latents)))
    return keep * target + (1 - keep) * latents


def super_resolve(
    first: UNet2DModel,
    last: UNet2DModel,
    scheduler: UnCLIPScheduler,
    small: torch.Tensor,
    generators: list[torch.Generator],
    *,
    device: torch.device,
    size: tuple[int, int],
    num_inference_steps: int,
    strength: float = 1.0,
    on_step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Upsample (B, 3, h, w) images in [-1, 1] to `size` (height, width) with the upsampler
    UNets: `first` for every step but the last, `last` for that one. `strength` < 1 starts
    part-way down the noise schedule from the bicubic upscale instead of from pure noise."""
    scheduler.set_timesteps(num_inference_steps, device=device)
    timesteps = scheduler.timesteps
    height, width = size
    dtype = first.dtype
    channels = first.config["in_channels"] // 2
    noise = randn_tensor((small.shape[0], channels, height, width), generator=generators, device=device, dtype=dtype)
    upscaled = F.interpolate(
        small.to(device, dtype),
        size=(height, width),
        mode="bicubic",
        align_corners=False,
        antialias=True,
    )
    if strength < 1.0:
        timesteps = timesteps[num_inference_steps - strength_steps(num_inference_steps, strength) :]
        latents = _noised(scheduler, upscaled.clamp(-1, 1), noise, timesteps[:1].repeat(len(noise)))
    else:
        latents = noise * scheduler.init_noise_sigma
    for i, t in enumerate(timesteps):
        # Karlo uses a second UNet for the last step only; a model may ship the same one twice.
        unet = last if i == len(timesteps) - 1 else first
        noise_pred = unet(sample=torch.cat([latents, upscaled], dim=1), timestep=t).sample
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else None
        latents = _previous_sample(scheduler, noise_pred, t, latents, prev_t, generators)
        if on_step:
            on_step()
    return latents.clamp(-1, 1)


# diffusers annotates UnCLIPScheduler.step for one generator and an int previous timestep, and
# add_noise for an IntTensor of timesteps; both take what its own pipeline passes, and what we pass:
# a generator per image (so each image depends only on its own) and the schedule's own tensor
# timesteps. These two are the only places that mismatch is accepted.


def _previous_sample(
    scheduler: UnCLIPScheduler,
    model_output: torch.Tensor,
    timestep: torch.Tensor,
    sample: torch.Tensor,
    prev_timestep: torch.Tensor | None,
    generators: list[torch.Generator],
) -> torch.Tensor:
    """One denoising step: the sample at `prev_timestep` (None: the last step)."""
    output = scheduler.step(
        model_output,
        timestep,  # type: ignore[arg-type]
        sample,
        prev_timestep=prev_timestep,  # type: ignore[arg-type]
        generator=generators,  # type: ignore[arg-type]
    )
    assert isinstance(output, UnCLIPSchedulerOutput)  # return_dict defaults to True
    return output.prev_sample


def _noised(
    scheduler: UnCLIPScheduler, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """`original` noised to each of `timesteps` (one per row), as the forward process would."""
    return scheduler.add_noise(original, noise, timesteps)  # type: ignore[arg-type]
