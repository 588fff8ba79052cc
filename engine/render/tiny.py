"""A tiny, randomly initialised unCLIP stack built entirely offline, in Karlo's folder layout.

It uses exactly the classes Karlo uses (CLIP text/vision towers with projection, PriorTransformer,
UnCLIPTextProjModel, a 6-channel UNet2DConditionModel decoder, a UNet2DModel super-resolution
stage, UnCLIPSchedulers) at toy sizes, so tests and benchmarks exercise the real loader and
pipeline code in well under a second per image. Its images are noise-like: it is untrained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.render.loader import quiet_libraries, set_offline
from engine.render.names import TINY_MODEL_NAME

if TYPE_CHECKING:  # torch and its libraries are imported when a stack is built
    from transformers import (
        CLIPImageProcessor,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        CLIPVisionModelWithProjection,
    )

# Every dimension that must agree across the stack (see the loader's checks).
EMBED_DIM = 32  # CLIP hidden = projection = prior embedding = text_proj clip_embeddings_dim
MAX_TOKENS = 16  # tokenizer length = text max positions = prior num_embeddings
DECODER_WIDTH = 16  # first decoder block; text_proj time_embed_dim is 4x this
CROSS_ATTENTION_DIM = 24

_CORPUS = [
    f"a {size} {colour} {shape} on a {bg} background {where}"
    for size in ("small", "big")
    for colour in ("red", "green", "blue", "yellow", "purple", "white")
    for shape in ("circle", "square", "triangle", "star", "heart", "ring")
    for bg in ("black", "white", "blue", "orange")
    for where in ("", "on the left", "at the top")
]


def scheduler_configs() -> dict[str, dict[str, Any]]:
    """Karlo's scheduler settings: the prior predicts x0, decoder and upsampler predict noise."""
    base = {"num_train_timesteps": 1000, "clip_sample": True}
    return {
        "prior_scheduler": {
            **base,
            "variance_type": "fixed_small_log",
            "prediction_type": "sample",
            "clip_sample_range": 5.0,
        },
        "decoder_scheduler": {
            **base,
            "variance_type": "learned_range",
            "prediction_type": "epsilon",
            "clip_sample_range": 1.0,
        },
        "super_res_scheduler": {
            **base,
            "variance_type": "fixed_small_log",
            "prediction_type": "epsilon",
            "clip_sample_range": 1.0,
        },
    }


def write_model_index(folder: Path, components: dict[str, tuple[str, str]], meta: dict[str, Any]) -> None:
    """model_index.json as Karlo has it, plus imagine.json with our own metadata."""
    index: dict[str, str | list[str]] = {"_class_name": "UnCLIPPipeline", "_diffusers_version": "0.42.1"}
    index.update({name: list(lib_cls) for name, lib_cls in sorted(components.items())})
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (folder / "imagine.json").write_text(json.dumps(meta, indent=2) + "\n")


def transformers_logging_quiet() -> None:
    quiet_libraries()


def _tiny_clip(
    seed: int,
) -> tuple[CLIPTokenizer, CLIPTextModelWithProjection, CLIPVisionModelWithProjection, CLIPImageProcessor]:
    """The tiny CLIP parts both families share: tokenizer, text tower, vision tower, processor."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    from engine.render.tokenizer import build_clip_tokenizer

    set_offline()
    transformers_logging_quiet()
    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer(_CORPUS, vocab_size=400, max_length=MAX_TOKENS)
    text_encoder = CLIPTextModelWithProjection(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=EMBED_DIM,
            projection_dim=EMBED_DIM,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=EMBED_DIM,
            projection_dim=EMBED_DIM,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        )
    )
    processor = CLIPImageProcessor(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        do_center_crop=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return tokenizer, text_encoder, image_encoder, processor


def build_tiny_unclip(folder: Path | str, *, seed: int = 0) -> Path:
    """Create the tiny random stack in `folder` (deterministic for a seed) and return the path."""
    import torch
    from diffusers.models.transformers.prior_transformer import PriorTransformer
    from diffusers.models.unets.unet_2d import UNet2DModel
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
    from diffusers.schedulers.scheduling_unclip import UnCLIPScheduler

    from engine.render.ar_prior import AutoregressivePrior

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer, text_encoder, image_encoder, feature_extractor = _tiny_clip(seed)
    prior = PriorTransformer(
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        embedding_dim=EMBED_DIM,
        num_embeddings=MAX_TOKENS,
    )
    # clip_mean/clip_std start at zero, which would scale every sampled embedding to 0.
    prior.clip_std.data.fill_(1.0)
    ar_prior = AutoregressivePrior(
        embedding_dim=EMBED_DIM, text_tokens=MAX_TOKENS, components=8, bins=16, width=32, layers=1, heads=2
    )
    # A codebook from random embeddings: untrained, but every bucket decodes to a real vector.
    ar_prior.fit_codebook(torch.randn(512, EMBED_DIM, generator=torch.Generator().manual_seed(seed)))
    text_proj = UnCLIPTextProjModel(
        clip_embeddings_dim=EMBED_DIM,
        time_embed_dim=4 * DECODER_WIDTH,
        cross_attention_dim=CROSS_ATTENTION_DIM,
    )
    decoder = UNet2DConditionModel(
        sample_size=16,
        in_channels=3,
        out_channels=6,
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=(DECODER_WIDTH, 2 * DECODER_WIDTH),
        layers_per_block=1,
        cross_attention_dim=CROSS_ATTENTION_DIM,
        attention_head_dim=8,
        resnet_time_scale_shift="scale_shift",
        class_embed_type="identity",
        norm_num_groups=8,
    )
    super_res = UNet2DModel(
        sample_size=32,
        in_channels=6,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        norm_num_groups=8,
        down_block_types=("ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D"),
        up_block_types=("ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"),
        resnet_time_scale_shift="scale_shift",
    )

    parts = {
        "tokenizer": (tokenizer, ("transformers", "CLIPTokenizer")),
        "text_encoder": (text_encoder, ("transformers", "CLIPTextModelWithProjection")),
        "image_encoder": (image_encoder, ("transformers", "CLIPVisionModelWithProjection")),
        "feature_extractor": (feature_extractor, ("transformers", "CLIPImageProcessor")),
        "prior": (prior, ("diffusers", "PriorTransformer")),
        "ar_prior": (ar_prior, ("imagine", "AutoregressivePrior")),
        "text_proj": (text_proj, ("unclip", "UnCLIPTextProjModel")),
        "decoder": (decoder, ("diffusers", "UNet2DConditionModel")),
        "super_res_first": (super_res, ("diffusers", "UNet2DModel")),
        "super_res_last": (super_res, ("diffusers", "UNet2DModel")),
    }
    for name, (part, _) in parts.items():
        part.save_pretrained(folder / name)
    for name, config in scheduler_configs().items():
        UnCLIPScheduler(**config).save_pretrained(folder / name)
    components = {name: lib_cls for name, (_, lib_cls) in parts.items()}
    components.update({name: ("diffusers", "UnCLIPScheduler") for name in scheduler_configs()})
    write_model_index(
        folder,
        components,
        {
            "name": TINY_MODEL_NAME,
            "description": "tiny randomly initialised unCLIP stack (untrained: noise-like images)",
            "trained": False,
            # Two steps per stage is the least UnCLIPScheduler accepts; enough for an untrained model.
            "defaults": {
                "prior_steps": 2,
                "decoder_steps": 2,
                "super_res_steps": 2,
                "prior_guidance": 4.0,
                "decoder_guidance": 4.0,
            },
        },
    )
    return folder


def build_tiny_kandinsky(folder: Path | str, *, seed: int = 0, inpaint: bool = False) -> Path:
    """Tiny random Kandinsky 2.2 prior and decoder folders (the classes and layouts of
    kandinsky-community/kandinsky-2-2-prior and -decoder; with `inpaint`, also
    -decoder-inpaint as `decoder-inpaint`); returns the decoder folder."""
    from diffusers.models.autoencoders.vq_model import VQModel
    from diffusers.models.transformers.prior_transformer import PriorTransformer
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2 import KandinskyV22Pipeline
    from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2_prior import KandinskyV22PriorPipeline
    from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
    from diffusers.schedulers.scheduling_unclip import UnCLIPScheduler

    folder = Path(folder)
    tokenizer, text_encoder, image_encoder, image_processor = _tiny_clip(seed)
    prior = PriorTransformer(
        num_attention_heads=2, attention_head_dim=8, num_layers=1, embedding_dim=EMBED_DIM, num_embeddings=MAX_TOKENS
    )
    prior.clip_std.data.fill_(1.0)
    prior_pipe = KandinskyV22PriorPipeline(
        prior=prior,
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=UnCLIPScheduler(**scheduler_configs()["prior_scheduler"]),
        image_processor=image_processor,
    )
    decoder_pipe = KandinskyV22Pipeline(
        unet=UNet2DConditionModel(
            in_channels=4,
            out_channels=8,
            addition_embed_type="image",
            down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
            up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
            mid_block_type="UNetMidBlock2DSimpleCrossAttn",
            block_out_channels=(16, 32),
            layers_per_block=1,
            encoder_hid_dim=EMBED_DIM,
            encoder_hid_dim_type="image_proj",
            cross_attention_dim=CROSS_ATTENTION_DIM,
            attention_head_dim=8,
            resnet_time_scale_shift="scale_shift",
            class_embed_type=None,
            norm_num_groups=8,
        ),
        scheduler=DDPMScheduler(
            num_train_timesteps=1000,
            beta_schedule="linear",
            beta_start=0.00085,
            beta_end=0.012,
            clip_sample=False,
            steps_offset=1,
            prediction_type="epsilon",
            thresholding=False,
        ),
        movq=VQModel(
            block_out_channels=[32, 64],
            down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
            in_channels=3,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=8,
            norm_type="spatial",
            num_vq_embeddings=12,
            out_channels=3,
            up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
            vq_embed_dim=4,
        ),
    )
    prior_pipe.save_pretrained(folder / "prior")
    decoder_pipe.save_pretrained(folder / "decoder")
    if inpaint:
        from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2_inpainting import KandinskyV22InpaintPipeline

        # The inpainting decoder's UNet reads 9 channels: the latents, the masked picture's
        # latents and the mask; the rest is the plain decoder's.
        inpaint_unet = UNet2DConditionModel.from_config({**decoder_pipe.unet.config, "in_channels": 9})
        inpaint_pipe = KandinskyV22InpaintPipeline(
            unet=inpaint_unet, scheduler=decoder_pipe.scheduler, movq=decoder_pipe.movq
        )
        inpaint_pipe.save_pretrained(folder / "decoder-inpaint")
    (folder / "decoder" / "imagine.json").write_text(
        json.dumps(
            {
                "name": "tiny-kandinsky",
                "description": "tiny randomly initialised Kandinsky 2.2 stack (untrained: noise-like images)",
                "trained": False,
                "prior": "../prior",
                "defaults": {"prior_steps": 2, "decoder_steps": 2, "size": 64},
            },
            indent=2,
        )
        + "\n"
    )
    return folder / "decoder"
