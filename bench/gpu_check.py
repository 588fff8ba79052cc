"""GPU readiness check: Karlo-sized and Kandinsky-2.2-sized stacks with random bf16 weights.

Throughput does not depend on weight values, so the stacks are built from the published
configurations (nothing to download) and run through the same code the worker runs: our
unCLIP pipeline for Karlo, diffusers' Kandinsky 2.2 pipelines for Kandinsky. For each family
and batch size (1/4/8/16/32) it reports images/s, the time of each stage, and the achieved
TFLOP/s of each stage against a FLOP count of one forward pass of that stage's network (torch's
FlopCounterMode) times its steps (x2 with classifier-free guidance).

Each batch runs twice in the same process: as a plain diffusers call, then with the worker's
speed-ups (engine/render/speedups.py: regional compile, CUDA graphs for the fixed-shape
networks, channels-last, fused QKV where diffusers allows it) applied to the same networks.
For the accelerated run it also reports the compile time (its first call minus its second),
the largest and mean pixel difference from the plain images at the same seeds, and each
network's output difference from its plain output at the same input, relative to the output's
magnitude (the speed-ups' own numerical tolerance, free of the sampler; on the CPU a few smoke
runs had a handful of pixel values far off while every network matched plain within 2e-6,
cause not found: read the two together).

    python bench/gpu_check.py                 # on a CUDA machine (bench/gpu_check.sh)
    python bench/gpu_check.py --tiny --device cpu --batches 1   # a smoke run of this script
    python bench/gpu_check.py --plain-only    # plain diffusers calls only, as before

Prints one JSON object, and a Markdown table on stderr for the README.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Published configurations (diffusers' convert_kakao_brain_unclip_to_diffusers.py for Karlo;
# kandinsky-community/kandinsky-2-2-{prior,decoder} for Kandinsky 2.2).
KARLO = {
    "text": {
        "vocab_size": 49408,
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "projection_dim": 768,
        "max_position_embeddings": 77,
    },
    "prior": {},  # PriorTransformer's defaults are Karlo's: 20 layers, 32x64 heads, 768-d, 77 tokens
    "decoder": {
        "sample_size": 64,
        "layers_per_block": 3,
        "in_channels": 3,
        "out_channels": 6,
        "down_block_types": (
            "ResnetDownsampleBlock2D",
            "SimpleCrossAttnDownBlock2D",
            "SimpleCrossAttnDownBlock2D",
            "SimpleCrossAttnDownBlock2D",
        ),
        "up_block_types": (
            "SimpleCrossAttnUpBlock2D",
            "SimpleCrossAttnUpBlock2D",
            "SimpleCrossAttnUpBlock2D",
            "ResnetUpsampleBlock2D",
        ),
        "mid_block_type": "UNetMidBlock2DSimpleCrossAttn",
        "block_out_channels": (320, 640, 960, 1280),
        "cross_attention_dim": 1536,
        "attention_head_dim": 64,
        "resnet_time_scale_shift": "scale_shift",
        "class_embed_type": "identity",
    },
    "text_proj": {"clip_embeddings_dim": 768, "time_embed_dim": 1280, "cross_attention_dim": 1536},
    "super_res": {
        "sample_size": 256,
        "layers_per_block": 3,
        "in_channels": 6,
        "out_channels": 3,
        "add_attention": False,
        "down_block_types": ("ResnetDownsampleBlock2D",) * 4,
        "up_block_types": ("ResnetUpsampleBlock2D",) * 4,
        "block_out_channels": (320, 640, 960, 1280),
    },
}
KANDINSKY = {
    "text": {
        "vocab_size": 49408,
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_hidden_layers": 32,
        "num_attention_heads": 20,
        "projection_dim": 1280,
        "max_position_embeddings": 77,
    },
    "vision": {
        "hidden_size": 1664,
        "intermediate_size": 8192,
        "num_hidden_layers": 48,
        "num_attention_heads": 16,
        "projection_dim": 1280,
        "image_size": 224,
        "patch_size": 14,
    },
    "prior": {
        "num_attention_heads": 32,
        "attention_head_dim": 64,
        "num_layers": 20,
        "embedding_dim": 1280,
        "num_embeddings": 77,
    },
    "unet": {
        "in_channels": 4,
        "out_channels": 8,
        "layers_per_block": 3,
        "block_out_channels": (384, 768, 1536, 3072),
        "cross_attention_dim": 768,
        "encoder_hid_dim": 1280,
        "encoder_hid_dim_type": "image_proj",
        "addition_embed_type": "image",
        "attention_head_dim": 64,
        "class_embed_type": None,
        "down_block_types": (
            "ResnetDownsampleBlock2D",
            "SimpleCrossAttnDownBlock2D",
            "SimpleCrossAttnDownBlock2D",
            "SimpleCrossAttnDownBlock2D",
        ),
        "up_block_types": (
            "SimpleCrossAttnUpBlock2D",
            "SimpleCrossAttnUpBlock2D",
            "SimpleCrossAttnUpBlock2D",
            "ResnetUpsampleBlock2D",
        ),
        "mid_block_type": "UNetMidBlock2DSimpleCrossAttn",
        "resnet_time_scale_shift": "scale_shift",
    },
    "movq": {
        "block_out_channels": [128, 256, 256, 512],
        "layers_per_block": 2,
        "latent_channels": 4,
        "down_block_types": [
            "DownEncoderBlock2D",
            "DownEncoderBlock2D",
            "DownEncoderBlock2D",
            "AttnDownEncoderBlock2D",
        ],
        "up_block_types": ["AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        "norm_type": "spatial",
        "num_vq_embeddings": 16384,
        "vq_embed_dim": 4,
        "in_channels": 3,
        "out_channels": 3,
    },
    "size": 512,
}


def shrink(config: dict) -> dict:
    """A tiny version of a configuration for the CPU smoke run (same classes and structure)."""
    small = json.loads(json.dumps(config))
    for key in ("text", "vision"):
        if key in small:
            small[key].update(
                hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32
            )
            if key == "vision":
                small[key].update(image_size=32, patch_size=8)
    if "prior" in small:
        small["prior"] = {
            "num_attention_heads": 2,
            "attention_head_dim": 8,
            "num_layers": 1,
            "embedding_dim": 32,
            "num_embeddings": 77,
        }
    for key in ("decoder", "super_res", "unet"):
        if key in small:
            small[key]["block_out_channels"] = [16, 32, 32, 32]
            small[key]["layers_per_block"] = 1
            small[key]["norm_num_groups"] = 8
            if "attention_head_dim" in small[key]:
                small[key]["attention_head_dim"] = 8
            if "cross_attention_dim" in small[key]:
                small[key]["cross_attention_dim"] = 24
            if "encoder_hid_dim" in small[key]:
                small[key]["encoder_hid_dim"] = 32
    if "decoder" in small:
        small["decoder"]["sample_size"] = 16
        small["super_res"]["sample_size"] = 64
        small["text_proj"] = {"clip_embeddings_dim": 32, "time_embed_dim": 64, "cross_attention_dim": 24}
    if "movq" in small:
        small["movq"].update(
            block_out_channels=[32, 32, 32, 32], layers_per_block=1, num_vq_embeddings=16, norm_num_groups=8
        )
        small["size"] = 64
    return small


def flops_of(module, *args, **kwargs) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*args, **kwargs)
    return float(counter.get_total_flops())


def tflop_s(flops: float, steps: int, seconds: float) -> float:
    """Achieved TFLOP/s to three significant digits (the tiny CPU stacks run at ~1e-4)."""
    return float(f"{flops * steps / seconds / 1e12:.3g}")


def timed(device: str, fn):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return result, time.perf_counter() - started


def build_karlo(config: dict, device: str, dtype):
    from diffusers import PriorTransformer, UNet2DConditionModel, UNet2DModel
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
    from diffusers.schedulers import UnCLIPScheduler
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from engine.render.tiny import scheduler_configs
    from engine.render.tokenizer import build_clip_tokenizer
    from engine.render.unclip import ImagineUnCLIPPipeline

    tokenizer = build_clip_tokenizer(
        ["a red star on a blue background"], vocab_size=300, max_length=config["text"]["max_position_embeddings"]
    )
    with torch.device(device):
        text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(**config["text"]))
        prior = PriorTransformer(**config["prior"])
        prior.clip_std.data.fill_(1.0)
        decoder = UNet2DConditionModel(**config["decoder"])
        text_proj = UnCLIPTextProjModel(**config["text_proj"])
        super_res = UNet2DModel(**config["super_res"])
    schedulers = {name: UnCLIPScheduler(**cfg) for name, cfg in scheduler_configs().items()}
    pipe = ImagineUnCLIPPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        text_proj=text_proj,
        decoder=decoder,
        prior=prior,
        super_res_first=super_res,
        super_res_last=super_res,
        **schedulers,
    )
    return pipe.to(device=device, dtype=dtype)


def run_karlo(pipe, batch: int, device: str, steps: dict, work: dict | None = None):
    """One timed generation at `batch`: (its row, the images in [0, 1], its `work`: each
    stage's FLOPs per forward and the inputs of one forward of each network, the probes).
    FLOPs are counted once, on the plain networks (compiled code bypasses torch's counter), and
    reused for the accelerated run: the same work, whatever does it."""
    generators = [torch.Generator("cpu").manual_seed(i) for i in range(batch)]
    prompts = ["a high-resolution photograph of a big red frog on a green leaf"] * batch
    text, seconds_text = timed(device, lambda: pipe.encode_text(prompts))
    uncond = pipe.encode_text([""] * batch)
    embeds, seconds_prior = timed(
        device,
        lambda: pipe.sample_prior(text, uncond, generators, num_inference_steps=steps["prior"], guidance_scale=4.0),
    )
    small, seconds_decoder = timed(
        device,
        lambda: pipe.decode(embeds, text, uncond, generators, num_inference_steps=steps["decoder"], guidance_scale=8.0),
    )
    big, seconds_sr = timed(
        device, lambda: pipe.super_resolve(small, generators, num_inference_steps=steps["super_res"])
    )
    if work is None:
        work = measure_work(karlo_probes(pipe, batch, device, text, uncond, embeds))
    flops = work["flops"]
    total = seconds_text + seconds_prior + seconds_decoder + seconds_sr
    row = {
        "img_s": round(batch / total, 3),
        "total_s": round(total, 3),
        "stage_s": {
            "text": round(seconds_text, 4),
            "prior": round(seconds_prior, 3),
            "decoder": round(seconds_decoder, 3),
            "super_res": round(seconds_sr, 3),
        },
        "tflop_s": {
            "prior": tflop_s(flops["prior"], steps["prior"], seconds_prior),
            "decoder": tflop_s(flops["decoder"], steps["decoder"], seconds_decoder),
            "super_res": tflop_s(flops["super_res"], steps["super_res"], seconds_sr),
        },
    }
    return row, (big.float() * 0.5 + 0.5).clamp(0, 1).cpu(), work


def measure_work(probes: dict) -> dict:
    """Each probe's FLOPs (one forward) and its plain output, kept to compare the accelerated
    network's output with at the same input."""
    return {
        "probes": probes,
        "flops": {name: flops_of(module, *args, **kwargs) for name, (module, args, kwargs) in probes.items()},
        "outputs": {name: forward_output(probe) for name, probe in probes.items()},
    }


def forward_output(probe) -> torch.Tensor:
    """The first tensor a network returns for a probe's input (diffusers' outputs are dicts)."""
    module, args, kwargs = probe
    with torch.no_grad():
        out = module(*args, **kwargs)
    if isinstance(out, dict):
        out = next(iter(out.values()))
    elif isinstance(out, tuple):
        out = out[0]
    return out.float().cpu()


def network_differences(work: dict) -> dict:
    """Each network's largest output difference from its plain output at the same input,
    relative to the plain output's largest magnitude: the numerical tolerance of the speed-ups,
    free of the sampler (docs/benchmarks.md: a few CPU smoke runs had pixels far off while every
    network matched within 2e-6)."""
    differences = {}
    for name, probe in work["probes"].items():
        plain = work["outputs"][name]
        difference = (forward_output(probe) - plain).abs().max() / plain.abs().max().clamp_min(1e-12)
        differences[name] = float(f"{float(difference):.3g}")
    return differences


def karlo_probes(pipe, batch: int, device: str, text, uncond, embeds) -> dict:
    """One forward's inputs for each stage's network, at this batch (x2 rows where guided)."""
    dtype = pipe.decoder.dtype
    latents = torch.randn(2 * batch, pipe.prior.config.embedding_dim, device=device, dtype=dtype)
    prior = (
        pipe.prior,
        (latents,),
        {
            "timestep": torch.tensor(1, device=device),
            "proj_embedding": torch.cat([uncond.embeds, text.embeds]).to(dtype),
            "encoder_hidden_states": torch.cat([uncond.hidden_states, text.hidden_states]).to(dtype),
            "attention_mask": torch.cat([uncond.mask, text.mask]),
        },
    )
    states, time_embeds = pipe.text_proj(
        image_embeddings=embeds.to(dtype),
        prompt_embeds=torch.cat([uncond.embeds, text.embeds]).to(dtype),
        text_encoder_hidden_states=torch.cat([uncond.hidden_states, text.hidden_states]).to(dtype),
        do_classifier_free_guidance=True,
    )
    size = pipe.decoder_size
    decoder = (
        pipe.decoder,
        (torch.randn(2 * batch, 3, size, size, device=device, dtype=dtype), torch.tensor(1, device=device)),
        {"encoder_hidden_states": states, "class_labels": time_embeds},
    )
    out = pipe.output_size
    super_res = (
        pipe.super_res_first,
        (torch.randn(batch, 6, out, out, device=device, dtype=dtype), torch.tensor(1, device=device)),
        {},
    )
    return {"prior": prior, "decoder": decoder, "super_res": super_res}


def build_kandinsky(config: dict, device: str, dtype):
    from diffusers import (
        DDPMScheduler,
        KandinskyV22Pipeline,
        KandinskyV22PriorPipeline,
        PriorTransformer,
        UnCLIPScheduler,
        UNet2DConditionModel,
        VQModel,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    from engine.render.tiny import scheduler_configs
    from engine.render.tokenizer import build_clip_tokenizer

    tokenizer = build_clip_tokenizer(
        ["a red star on a blue background"], vocab_size=300, max_length=config["text"]["max_position_embeddings"]
    )
    with torch.device(device):
        prior = PriorTransformer(**config["prior"])
        prior.clip_std.data.fill_(1.0)
        prior_pipe = KandinskyV22PriorPipeline(
            prior=prior,
            image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(**config["vision"])),
            text_encoder=CLIPTextModelWithProjection(CLIPTextConfig(**config["text"])),
            tokenizer=tokenizer,
            scheduler=UnCLIPScheduler(**scheduler_configs()["prior_scheduler"]),
            image_processor=CLIPImageProcessor(
                size={"shortest_edge": config["vision"]["image_size"]}, crop_size=config["vision"]["image_size"]
            ),
        )
        decoder_pipe = KandinskyV22Pipeline(
            unet=UNet2DConditionModel(**config["unet"]),
            scheduler=DDPMScheduler(
                beta_schedule="linear",
                beta_start=0.00085,
                beta_end=0.012,
                clip_sample=False,
                steps_offset=1,
                prediction_type="epsilon",
            ),
            movq=VQModel(**config["movq"]),
        )
    for pipe in (prior_pipe, decoder_pipe):
        pipe.to(device=device, dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
    return prior_pipe, decoder_pipe


def run_kandinsky(pipes, batch: int, device: str, steps: dict, size: int, work: dict | None = None):
    """As `run_karlo`, for Kandinsky 2.2's prior and decoder pipelines."""
    prior_pipe, decoder_pipe = pipes
    generators = [torch.Generator("cpu").manual_seed(i) for i in range(batch)]
    prompts = ["a high-resolution photograph of a big red frog on a green leaf"] * batch
    prior_out, seconds_prior = timed(
        device, lambda: prior_pipe(prompt=prompts, num_inference_steps=steps["prior"], generator=generators)
    )
    images, seconds_decoder = timed(
        device,
        lambda: (
            decoder_pipe(
                image_embeds=prior_out.image_embeds,
                negative_image_embeds=prior_out.negative_image_embeds,
                height=size,
                width=size,
                num_inference_steps=steps["decoder"],
                generator=generators,
                output_type="pt",
            ).images
        ),
    )
    if work is None:
        dtype = decoder_pipe.unet.dtype
        latent = size // 8
        work = measure_work(
            {
                "decoder_unet": (
                    decoder_pipe.unet,
                    (
                        torch.randn(2 * batch, 4, latent, latent, device=device, dtype=dtype),
                        torch.tensor(1, device=device),
                    ),
                    {
                        "encoder_hidden_states": None,
                        "added_cond_kwargs": {
                            "image_embeds": torch.cat([prior_out.negative_image_embeds, prior_out.image_embeds]).to(
                                dtype
                            )
                        },
                    },
                )
            }
        )
    flops = work["flops"]
    total = seconds_prior + seconds_decoder
    row = {
        "img_s": round(batch / total, 3),
        "total_s": round(total, 3),
        "stage_s": {"prior": round(seconds_prior, 3), "decoder_and_movq": round(seconds_decoder, 3)},
        "tflop_s": {"decoder_unet": tflop_s(flops["decoder_unet"], steps["decoder"], seconds_decoder)},
    }
    return row, images.float().clamp(0, 1).cpu(), work


def speedups_from_args(args):
    """The accelerated run's settings (all of engine/render/speedups.py by default)."""
    from engine.render.speedups import Speedups

    cuda = args.device.startswith("cuda")
    return Speedups(
        compile=args.compile,
        cuda_graphs=args.cuda_graphs == "on",  # skipped, with the reason, where not on CUDA
        channels_last=not args.no_channels_last,
        fuse_qkv=not args.no_fuse_qkv,
        cache_dir=Path(args.compile_cache) if args.compile_cache else None,
        # Inductor needs a C compiler on the CPU and takes minutes there even for the tiny
        # stacks; aot_eager still runs dynamo and AOT autograd over every compiled block.
        backend=args.compile_backend or ("inductor" if cuda else "aot_eager"),
    )


def plain_and_accelerated(run, networks: dict, fixed_shape, batches, speedups, device: str, result: dict, save) -> None:
    """Each batch run plain, then the speed-ups applied in place and each batch run twice more:
    the first call's extra time over the second is the compile (and CUDA-graph capture) time;
    the second is the accelerated row, its images compared with the plain ones (same seeds).
    Rows go into `result` as they are measured, and `save()` is called after each, so a run
    cut short keeps what it measured. A batch the card cannot hold, or an accelerated run that
    fails (a compile error), is recorded as such and the run goes on."""
    from engine.render.speedups import apply_speedups

    run(1, None)  # warm-up: kernels, allocator
    plain = {}
    for batch in batches:
        plain[batch] = failed_or(lambda b=batch: run(b, None), (torch.OutOfMemoryError,))
        result[f"batch_{batch}"] = {"plain": plain[batch][0]}
        save()
    if speedups is None:
        return
    report, setup_s = timed(device, lambda: apply_speedups(networks, speedups, device=device, fixed_shape=fixed_shape))
    result["speedups"] = {**report.as_dict(), "backend": speedups.backend, "setup_s": round(setup_s, 2)}
    for batch in batches:
        entry = result[f"batch_{batch}"]
        if "error" in entry["plain"]:
            continue
        first, _, _ = failed_or(lambda b=batch: run(b, plain[b][2]), (Exception,))
        row, images, _ = first, None, None
        if "error" not in first:
            row, images, _ = failed_or(lambda b=batch: run(b, plain[b][2]), (Exception,))
        entry["accelerated"] = row
        if images is not None:
            row["compile_s"] = round(first["total_s"] - row["total_s"], 2)
            difference = (images - plain[batch][1]).abs() * 255
            entry["speedup_x"] = round(row["img_s"] / entry["plain"]["img_s"], 3)
            entry["max_abs_pixel_diff"] = round(float(difference.max()), 2)  # of 255
            entry["mean_abs_pixel_diff"] = round(float(difference.mean()), 3)
            entry["network_rel_diff"] = network_differences(plain[batch][2])
        save()


def failed_or(fn, errors: tuple):
    """fn(), or an error row when it raises one of `errors` (a batch that does not fit in the
    card's memory; for the accelerated run, anything: a compile that fails is a result too)."""
    try:
        return fn()
    except errors as error:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        first_line = (str(error).splitlines() or [""])[0][:300]
        return {"error": f"{type(error).__name__}: {first_line}"}, None, None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batches", default="1,4,8,16,32")
    parser.add_argument("--tiny", action="store_true", help="tiny configurations: a smoke run of this script")
    parser.add_argument("--families", default="karlo,kandinsky22")
    parser.add_argument(
        "--steps",
        default=None,
        help="prior,decoder,super_res steps (default 25,25,7; Kandinsky's decoder runs 2x decoder)",
    )
    parser.add_argument("--plain-only", action="store_true", help="measure plain diffusers calls only")
    parser.add_argument("--compile", choices=("regional", "off"), default="regional")
    parser.add_argument("--cuda-graphs", choices=("on", "off"), default="on", help="CUDA only (else skipped)")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--no-fuse-qkv", action="store_true")
    parser.add_argument("--compile-backend", default="", help="default: inductor on CUDA, aot_eager on the CPU")
    parser.add_argument("--compile-cache", default="", help="inductor's cache folder (default: its own)")
    parser.add_argument(
        "--out", default="", help="also write the JSON here after every batch (a cut-short run keeps it)"
    )
    args = parser.parse_args()
    from engine.render.loader import quiet_libraries, set_offline

    set_offline()
    quiet_libraries()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    batches = [int(b) for b in args.batches.split(",")]
    steps = (
        {"prior": 25, "decoder": 25, "super_res": 7} if not args.tiny else {"prior": 2, "decoder": 2, "super_res": 2}
    )
    if args.steps:
        steps = dict(zip(("prior", "decoder", "super_res"), (int(n) for n in args.steps.split(",")), strict=True))
    result: dict = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
        "dtype": str(dtype).replace("torch.", ""),
        "torch": torch.__version__,
    }
    speedups = None if args.plain_only else speedups_from_args(args)

    def save() -> None:
        if args.out:
            Path(args.out).write_text(json.dumps(result) + "\n")

    families = args.families.split(",")
    if "karlo" in families:
        config = shrink(KARLO) if args.tiny else KARLO
        pipe, seconds = timed(args.device, lambda: build_karlo(config, args.device, dtype))
        networks = {
            "prior": pipe.prior,
            "decoder": pipe.decoder,
            "super_res_first": pipe.super_res_first,
            "super_res_last": pipe.super_res_last,
        }
        result["karlo"] = {"build_s": round(seconds, 1)}
        plain_and_accelerated(
            lambda b, work: run_karlo(pipe, b, args.device, steps, work),
            networks,
            networks,  # as the unCLIP family: every network runs at fixed shapes
            batches,
            speedups,
            args.device,
            result["karlo"],
            save,
        )
        del pipe, networks
        # Let Kandinsky start with the memory free: Karlo's compiled code and CUDA-graph pools.
        torch._dynamo.reset()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if "kandinsky22" in families:
        config = shrink(KANDINSKY) if args.tiny else KANDINSKY
        k_steps = {"prior": steps["prior"], "decoder": 2 * steps["decoder"]}
        pipes, seconds = timed(args.device, lambda: build_kandinsky(config, args.device, dtype))
        networks = {"prior": pipes[0].prior, "decoder": pipes[1].unet, "movq": pipes[1].movq}
        result["kandinsky22"] = {"build_s": round(seconds, 1), "size": config["size"]}
        plain_and_accelerated(
            lambda b, work: run_kandinsky(pipes, b, args.device, k_steps, config["size"], work),
            networks,
            ("prior",),  # as the Kandinsky family: the decoder's size follows the aspect
            batches,
            speedups,
            args.device,
            result["kandinsky22"],
            save,
        )
    print(json.dumps(result))
    print(markdown(result), file=sys.stderr)
    return 0


def markdown(result: dict) -> str:
    lines = [
        f"GPU check on {result['device']} ({result['dtype']}, torch {result['torch']})",
        "",
        "| family | batch | images/s plain → accelerated | × | compile s | max / mean pixel diff (of 255) "
        "| network output diff (relative) | stage seconds plain → accelerated | TFLOP/s plain → accelerated |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for family in ("karlo", "kandinsky22"):
        for key, entry in result.get(family, {}).items():
            if not key.startswith("batch_"):
                continue
            plain, fast = entry["plain"], entry.get("accelerated")
            if "error" in plain or (fast and "error" in fast):
                lines.append(f"| {family} | {key[6:]} | {(fast or plain)['error']} | | | | | | |")
                continue
            if fast is None:
                stages = ", ".join(f"{k} {v}" for k, v in plain["stage_s"].items())
                flops = ", ".join(f"{k} {v}" for k, v in plain["tflop_s"].items())
                lines.append(f"| {family} | {key[6:]} | {plain['img_s']} | — | — | — | — | {stages} | {flops} |")
                continue
            stages = ", ".join(f"{k} {v} → {fast['stage_s'][k]}" for k, v in plain["stage_s"].items())
            flops = ", ".join(f"{k} {v} → {fast['tflop_s'][k]}" for k, v in plain["tflop_s"].items())
            lines.append(
                f"| {family} | {key[6:]} | {plain['img_s']} → {fast['img_s']} | {entry['speedup_x']} "
                f"| {fast['compile_s']} | {entry['max_abs_pixel_diff']} / {entry['mean_abs_pixel_diff']} "
                f"| {', '.join(f'{k} {v}' for k, v in entry['network_rel_diff'].items())} "
                f"| {stages} | {flops} |"
            )
        report = result.get(family, {}).get("speedups")
        if report:
            lines += [
                "",
                f"{family} speed-ups ({report['backend']}): " + "; ".join(report["applied"] + report["skipped"]),
            ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
