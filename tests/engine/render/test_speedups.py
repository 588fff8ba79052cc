"""Render speed-ups (engine/render/speedups.py) on the CPU: the same images as a plain call,
what was applied and why the rest was skipped, and the compile cache across processes.

torch.compile runs with the "eager" backend here (dynamo's capture without code generation:
seconds, where inductor takes minutes for a UNet on this CPU); one test compiles a tiny function
with inductor to check its cache survives a restart. CUDA graphs can only be skipped here.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.render.families.unclip import UnCLIPRenderer
from engine.render.loader import resolve_model
from engine.render.speedups import BUCKETS, Speedups, apply_speedups, bucket_for, pad_to_buckets
from engine.render.types import RenderJob
from tests.conftest import assert_same_pixels

ROOT = Path(__file__).resolve().parents[3]
ALL_ON = Speedups(compile="regional", cuda_graphs=True, channels_last=True, fuse_qkv=True, backend="eager")


def pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as picture:
        return np.asarray(picture.convert("RGB")).astype(int)


def quiet(_fraction: float, _stage: str) -> None:
    pass


def test_all_speedups_give_the_plain_images_and_say_what_they_did(tiny_model_dir, tiny_renderer):
    """Every speed-up asked for on the tiny unCLIP stack: the images equal the plain renderer's
    (`assert_same_pixels`, the batching tolerance), and the report names each network's outcome."""
    fast = UnCLIPRenderer.load(
        resolve_model(str(tiny_model_dir), tiny_model_dir.parent), device="cpu", dtype="float32", speedups=ALL_ON
    )
    from torch._dynamo.utils import counters

    job = RenderJob(1, "text2image", "a red star", None, 7, 2)
    plain = tiny_renderer.render(job, quiet)
    counters.clear()
    fast_result = fast.render(job, quiet)
    assert counters["frames"]["ok"] > 0  # the compiled blocks ran through dynamo
    for a, b in zip(plain.images, fast_result.images, strict=True):
        assert_same_pixels(pixels(a.png), pixels(b.png))

    assert "speedups" not in plain.info  # off: the record is as before
    assert fast_result.info["speedups"] == fast.speedups.applied  # on: the record says which
    report = fast.speedups
    assert "prior: fused QKV projections (1 attention layers)" in report.applied
    prior_attention = [m for m in fast.pipe.prior.modules() if type(m).__name__ == "Attention"]
    assert all(type(m.processor).__name__ == "FusedAttnProcessor2_0" for m in prior_attention)
    assert any(line.startswith("decoder: fused QKV skipped (") and "added KV" in line for line in report.skipped)
    assert "decoder: channels-last weights" in report.applied
    assert "prior: channels-last skipped (no 2-d convolutions)" in report.skipped
    assert any(line.startswith("decoder: regional compile (eager) of ") for line in report.applied)
    assert "decoder: CUDA graphs skipped (CUDA only, this device is cpu)" in report.skipped
    # In place: the decoder is still the UNet (diffusers' attributes work), its blocks compiled.
    decoder = fast.pipe.decoder
    assert type(decoder).__name__ == "UNet2DConditionModel"
    resnets = [m for m in decoder.modules() if type(m).__name__ == "ResnetBlock2D"]
    assert resnets and all(m._compiled_call_impl is not None for m in resnets)
    assert decoder._compiled_call_impl is None  # regional, not the whole network
    conv = next(m for m in decoder.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_no_speedups_leave_the_networks_alone():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.SiLU())
    report = apply_speedups({"decoder": net}, Speedups(), device="cpu", fixed_shape=("decoder",))
    assert report.as_dict() == {"applied": [], "skipped": []}
    assert str(report) == "none asked for"
    assert net[0].weight.is_contiguous() and net[0]._compiled_call_impl is None


def test_a_shared_module_is_done_once_and_unsuitable_settings_are_skipped_with_reasons():
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    report = apply_speedups(
        {"first": conv, "last": conv, "missing": None},
        Speedups(compile="regional", cuda_graphs=True, fuse_qkv=True, channels_last=True, backend="eager"),
        device="cpu",
    )
    assert report.applied == ["first: channels-last weights"]
    assert report.skipped == [
        "last: all skipped (the same module as first)",
        "first: fused QKV skipped (Sequential has no fuse_qkv_projections)",
        "first: CUDA graphs skipped (CUDA only, this device is cpu)",
        "first: regional compile skipped (no repeated blocks (BasicTransformerBlock, ResnetBlock2D, Attention) in it)",
    ]


def test_speedups_refuse_an_unknown_compile_mode():
    with pytest.raises(ValueError, match="compile must be one of off, regional"):
        Speedups(compile="max-autotune")


def test_the_kandinsky_decoder_gets_the_same_images_with_speedups(tmp_path_factory):
    """Kandinsky 2.2: its UNet refuses fused QKV (added KV) and is not CUDA-graphed (its size
    follows the aspect); the rest applies and the images stay those of the plain renderer."""
    from engine.render.factory import load_renderer
    from engine.render.tiny import build_tiny_kandinsky

    folder = build_tiny_kandinsky(tmp_path_factory.mktemp("kandinsky-fast"))
    plain = load_renderer(str(folder), folder.parent, device="cpu", dtype="float32")
    fast = load_renderer(str(folder), folder.parent, device="cpu", dtype="float32", speedups=ALL_ON)
    job = RenderJob(1, "text2image", "a red star", None, 3, 1)
    a, b = plain.render(job, quiet), fast.render(job, quiet)
    assert_same_pixels(pixels(a.images[0].png), pixels(b.images[0].png))
    report = fast.speedups
    assert any(line.startswith("decoder: fused QKV skipped (") for line in report.skipped)
    assert "movq: channels-last weights" in report.applied
    assert any(line.startswith("decoder: regional compile (eager)") for line in report.applied)
    assert "prior: CUDA graphs skipped (CUDA only, this device is cpu)" in report.skipped


def test_batches_are_padded_to_buckets_and_cut_back():
    """The CUDA-graph path's padding: the network sees only bucket sizes, every tensor with the
    batch's first dimension (also inside a dict) is padded, and each row's output is unchanged."""
    seen: list[tuple[int, ...]] = []
    layer = torch.nn.Linear(4, 2)

    def forward(sample, timestep, cond=None):
        seen.append((sample.shape[0], timestep.dim(), cond["embeds"].shape[0]))
        return {"sample": layer(sample) + cond["embeds"] + timestep}

    padded = pad_to_buckets(forward)
    sample, cond = torch.randn(5, 4), {"embeds": torch.randn(5, 2)}
    out = padded(sample, torch.tensor(3.0), cond=cond)
    assert seen == [(8, 0, 8)]
    assert out["sample"].shape == (5, 2)
    torch.testing.assert_close(out["sample"], forward(sample, torch.tensor(3.0), cond)["sample"])
    assert [bucket_for(n) for n in (1, 3, 8, 9, 13, 33, 64, 65)] == [1, 4, 8, 12, 16, 48, 64, 65]
    assert BUCKETS[-1] == 64  # 32 images with classifier-free guidance


CACHE_PROBE = """
import sys
from pathlib import Path
from engine.render.speedups import use_compile_cache
use_compile_cache(Path(sys.argv[1]))
import torch
from torch._dynamo.utils import counters
torch.compile(lambda x: torch.nn.functional.silu(x) * 2 + 1)(torch.randn(8))
print(dict(counters["inductor"]))
"""


def test_inductor_compiles_are_cached_across_processes(tmp_path):
    """A worker restart finds the compiled kernels in the compile cache (one real inductor
    compile of a tiny function: ~10 s cold here, ~2 s from the cache)."""
    cache = tmp_path / "compile-cache"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def run() -> str:
        done = subprocess.run(
            [sys.executable, "-c", CACHE_PROBE, str(cache)], capture_output=True, text=True, env=env, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    assert "fxgraph_cache_miss" in run()
    assert (cache / "fxgraph").is_dir()
    assert "'fxgraph_cache_hit': 1" in run()


def test_the_cuda_graph_path_is_wired_as_on_a_gpu(monkeypatch, tmp_path, tiny_model_dir):
    """What a CUDA worker would do, with torch.compile stood in for (no GPU here): the fixed-shape
    networks are compiled whole in mode reduce-overhead behind the bucket padding, one CUDA-graph
    step per call; the others get the regional compile; the cache folder is set; offloaded
    weights refuse graphs. The padded UNet still gives each row's own output."""
    from engine.render.loader import load_unclip

    compiled: list[dict] = []
    steps: list[int] = []

    def fake_compile(fn, **options):
        compiled.append(options)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: steps.append(1))
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE", "TORCHINDUCTOR_AUTOGRAD_CACHE"):
        monkeypatch.delenv(name, raising=False)  # restored after the test: use_compile_cache sets them
    pipe = load_unclip(resolve_model(str(tiny_model_dir), tiny_model_dir.parent))
    decoder = pipe.decoder
    sample = torch.randn(3, decoder.config.in_channels, 8, 8)
    states = torch.randn(3, 4, decoder.config.cross_attention_dim)
    labels = torch.randn(3, decoder.config.block_out_channels[0] * 4)
    with torch.no_grad():
        before = decoder(sample, torch.tensor(5), encoder_hidden_states=states, class_labels=labels).sample

    speedups = Speedups(compile="regional", cuda_graphs=True, cache_dir=tmp_path / "cache")
    with monkeypatch.context() as patched:
        patched.setattr("torch.nn.Module.compile", lambda self, **options: None)  # regional: nothing to run
        report = apply_speedups(
            {"decoder": decoder, "prior": pipe.prior}, speedups, device="cuda:0", fixed_shape=("decoder",)
        )
    assert "decoder: CUDA graphs (whole network, mode reduce-overhead), batches padded to " in report.applied[1]
    assert "prior: CUDA graphs skipped (its shapes change from call to call)" in report.skipped
    assert any(line.startswith("prior: regional compile (inductor)") for line in report.applied)
    assert not any(line.startswith("decoder: regional") for line in report.applied)
    assert compiled == [{"backend": "inductor", "mode": "reduce-overhead"}]
    assert report.applied[0] == f"all: compile cache in {tmp_path / 'cache'}"
    assert (tmp_path / "cache").is_dir()
    with torch.no_grad():
        after = decoder(sample, torch.tensor(5), encoder_hidden_states=states, class_labels=labels).sample
    assert after.shape == before.shape and steps == [1]
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)

    offloaded = apply_speedups(
        {"decoder": pipe.super_res_first}, Speedups(cuda_graphs=True), device="cuda", offloaded=True
    )
    assert offloaded.skipped == [
        "decoder: CUDA graphs skipped (model CPU offload moves the weights, a graph replays fixed addresses)"
    ]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_all_speedups_on_cuda_match_plain_in_bf16(tiny_model_dir, tmp_path):
    """On a GPU, with inductor and CUDA graphs for real: the same images as the plain renderer
    within bf16 tolerance, for a batch shape that needs padding (3 images) and one that does not."""
    spec = resolve_model(str(tiny_model_dir), tiny_model_dir.parent)
    plain = UnCLIPRenderer.load(spec, device="cuda", dtype="bfloat16")
    speedups = Speedups(
        compile="regional", cuda_graphs=True, channels_last=True, fuse_qkv=True, cache_dir=tmp_path / "cache"
    )
    fast = UnCLIPRenderer.load(spec, device="cuda", dtype="bfloat16", speedups=speedups)
    assert any("CUDA graphs (whole network" in line for line in fast.speedups.applied)
    for n in (3, 4, 3):  # the third call replays graphs recorded by the first
        job = RenderJob(1, "text2image", "a red star", None, 11, n)
        for a, b in zip(plain.render(job, quiet).images, fast.render(job, quiet).images, strict=True):
            assert np.abs(pixels(a.png) - pixels(b.png)).mean() < 3
