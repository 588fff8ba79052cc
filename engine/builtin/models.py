"""The built-in model's architecture: Karlo's component classes at sizes a 2-core CPU can train.

`Architecture.full()` is what ships; `Architecture.smoke()` is the same stack at toy sizes for the
smoke run and the tests. The dimension rules the loader checks are enforced here by construction:
CLIP text width = projection = prior embedding = text_proj input, tokenizer length = text
positions = prior tokens, text_proj time embedding = 4 × the decoder's first block width.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # each builder imports its library when called: this module stays light
    from diffusers.models.transformers.prior_transformer import PriorTransformer
    from diffusers.models.unets.unet_2d import UNet2DModel
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
    from transformers import (
        CLIPImageProcessor,
        CLIPTextModelWithProjection,
        CLIPVisionModelWithProjection,
        PreTrainedTokenizerBase,
    )

    from engine.render.ar_prior import AutoregressivePrior


@dataclass(frozen=True)
class Architecture:
    image_size: int = 64  # what the model outputs (the upsampler's size)
    decoder_size: int = 32  # what the decoder draws
    clip_size: int = 32  # what the CLIP image tower sees
    embed_dim: int = 64  # CLIP text width = projection dim = prior embedding dim
    max_tokens: int = 32
    vocab_size: int = 600
    text_layers: int = 4
    text_heads: int = 4
    vision_width: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    vision_patch: int = 4
    prior_layers: int = 6
    prior_heads: int = 4
    prior_head_dim: int = 32
    decoder_widths: tuple[int, ...] = (32, 64, 128)
    decoder_layers_per_block: int = 1
    decoder_head_dim: int = 32
    cross_attention_dim: int = 128
    ar_components: int = 32  # the AR prior's PCA directions (of embed_dim)
    ar_bins: int = 64  # and buckets per direction
    ar_width: int = 64
    ar_layers: int = 4
    upsampler_widths: tuple[int, ...] = (32, 64, 96)
    upsampler_layers_per_block: int = 1
    norm_groups: int = 16

    @classmethod
    def full(cls) -> Architecture:
        return cls()

    @classmethod
    def smoke(cls) -> Architecture:
        return cls(
            embed_dim=32,
            max_tokens=32,
            vocab_size=400,
            text_layers=1,
            text_heads=2,
            vision_width=32,
            vision_layers=1,
            vision_heads=2,
            vision_patch=8,
            prior_layers=1,
            prior_heads=2,
            prior_head_dim=16,
            decoder_widths=(16, 32),
            decoder_layers_per_block=1,
            decoder_head_dim=16,
            cross_attention_dim=32,
            ar_components=8,
            ar_bins=16,
            ar_width=32,
            ar_layers=1,
            upsampler_widths=(8, 16),
            upsampler_layers_per_block=1,
            norm_groups=8,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        # JSON gives the tuple fields back as lists.
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**fields)


def build_text_encoder(arch: Architecture, tokenizer: PreTrainedTokenizerBase) -> CLIPTextModelWithProjection:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=arch.embed_dim,
            projection_dim=arch.embed_dim,
            intermediate_size=4 * arch.embed_dim,
            num_hidden_layers=arch.text_layers,
            num_attention_heads=arch.text_heads,
            max_position_embeddings=arch.max_tokens,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def build_image_encoder(arch: Architecture) -> CLIPVisionModelWithProjection:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=arch.vision_width,
            projection_dim=arch.embed_dim,
            intermediate_size=4 * arch.vision_width,
            num_hidden_layers=arch.vision_layers,
            num_attention_heads=arch.vision_heads,
            image_size=arch.clip_size,
            patch_size=arch.vision_patch,
        )
    )


def build_feature_extractor(arch: Architecture) -> CLIPImageProcessor:
    """Resize to the CLIP tower's size (bicubic, as `clip_pixels` does in training), scale to [-1, 1]."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": arch.clip_size},
        crop_size={"height": arch.clip_size, "width": arch.clip_size},
        do_center_crop=True,
        resample=3,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def build_prior(arch: Architecture) -> PriorTransformer:
    from diffusers.models.transformers.prior_transformer import PriorTransformer

    return PriorTransformer(
        num_attention_heads=arch.prior_heads,
        attention_head_dim=arch.prior_head_dim,
        num_layers=arch.prior_layers,
        embedding_dim=arch.embed_dim,
        num_embeddings=arch.max_tokens,
    )


def build_ar_prior(arch: Architecture) -> AutoregressivePrior:
    from engine.render.ar_prior import AutoregressivePrior

    return AutoregressivePrior(
        embedding_dim=arch.embed_dim,
        text_tokens=arch.max_tokens,
        components=arch.ar_components,
        bins=arch.ar_bins,
        width=arch.ar_width,
        layers=arch.ar_layers,
        heads=4 if arch.ar_width >= 64 else 2,
    )


def build_text_proj(arch: Architecture) -> UnCLIPTextProjModel:
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel

    return UnCLIPTextProjModel(
        clip_embeddings_dim=arch.embed_dim,
        time_embed_dim=4 * arch.decoder_widths[0],
        cross_attention_dim=arch.cross_attention_dim,
    )


def build_decoder(arch: Architecture) -> UNet2DConditionModel:
    """Karlo's decoder blocks, cross-attention only at the lowest resolution (the CPU's budget)."""
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    levels = len(arch.decoder_widths)
    return UNet2DConditionModel(
        sample_size=arch.decoder_size,
        in_channels=3,
        out_channels=6,
        down_block_types=("ResnetDownsampleBlock2D",) * (levels - 1) + ("SimpleCrossAttnDownBlock2D",),
        up_block_types=("SimpleCrossAttnUpBlock2D",) + ("ResnetUpsampleBlock2D",) * (levels - 1),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=arch.decoder_widths,
        layers_per_block=arch.decoder_layers_per_block,
        cross_attention_dim=arch.cross_attention_dim,
        attention_head_dim=arch.decoder_head_dim,
        resnet_time_scale_shift="scale_shift",
        class_embed_type="identity",
        norm_num_groups=arch.norm_groups,
    )


def build_upsampler(arch: Architecture) -> UNet2DModel:
    """A convolution-only UNet: input = noisy high-res (3) + upscaled low-res (3) channels."""
    from diffusers.models.unets.unet_2d import UNet2DModel

    levels = len(arch.upsampler_widths)
    return UNet2DModel(
        sample_size=arch.image_size,
        in_channels=6,
        out_channels=3,
        layers_per_block=arch.upsampler_layers_per_block,
        block_out_channels=arch.upsampler_widths,
        down_block_types=("ResnetDownsampleBlock2D",) * levels,
        up_block_types=("ResnetUpsampleBlock2D",) * levels,
        add_attention=False,
        resnet_time_scale_shift="scale_shift",
        norm_num_groups=min(arch.norm_groups, min(arch.upsampler_widths)),
    )
