"""Choose and load the renderer for a configured model (what diffusers' auto_pipeline is to its
pipelines).

The loader tells a model's family from its folder (`model_index.json`); this module maps the
family to its renderer class in `engine.render.families` and loads it, or returns the no-op
renderer the benchmarks use. It is the only module that knows every family, and it imports
them lazily: the no-op backend imports no torch, and loading Karlo never imports Kandinsky's.
It also builds the tiny random test model the first time it is named (`find_model`), so the
loader never needs the builder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from engine.render.loader import ModelSpec, ModelUnavailable, resolve_model
from engine.render.names import TINY_MODEL_NAME, tiny_model_dir

if TYPE_CHECKING:
    from engine.render.base import BaseRenderer
    from engine.render.noop import NoopRenderer
    from engine.render.speedups import Speedups


def find_model(model: str, data_dir: Path) -> ModelSpec:
    """`resolve_model`, after building the tiny random test model if it is named and not built
    yet (IMAGINE_RENDER_MODEL=tiny-random: a worker that runs without any real weights)."""
    if model == TINY_MODEL_NAME and not (tiny_model_dir(data_dir) / "model_index.json").exists():
        from engine.render.tiny import build_tiny_unclip

        build_tiny_unclip(tiny_model_dir(data_dir))
    return resolve_model(model, data_dir)


def load_renderer(
    model: str,
    data_dir: Path,
    *,
    backend: str = "unclip",
    device: str = "auto",
    dtype: str = "auto",
    cpu_offload: bool = False,
    speedups: Speedups | None = None,
    torch_threads: int = 0,
    prior_model: str | None = None,
    inpaint_model: str | None = None,
    noop_delay_ms: str = "",
) -> BaseRenderer | NoopRenderer:
    """The renderer a worker process uses: loaded once, kept warm, with `speedups` applied
    (engine/render/speedups.py; none by default: a plain diffusers call)."""
    if backend == "noop":
        from engine.render.noop import NoopRenderer, parse_delay

        return NoopRenderer(parse_delay(noop_delay_ms))
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    spec = find_model(model, data_dir)
    if inpaint_model and spec.family != "kandinsky22":
        raise ModelUnavailable(
            f"IMAGINE_RENDER_INPAINT_MODEL is for Kandinsky 2.2 decoders; {spec.path} is {spec.family} "
            "(unCLIP models edit with their own decoder: leave it empty)"
        )
    if spec.family == "unclip":
        from engine.render.families.unclip import UnCLIPRenderer

        return UnCLIPRenderer.load(spec, device=device, dtype=dtype, cpu_offload=cpu_offload, speedups=speedups)
    if spec.family == "kandinsky22":
        from engine.render.families.kandinsky import KandinskyRenderer

        return KandinskyRenderer.load(
            spec,
            data_dir,
            prior_model=prior_model,
            inpaint_model=inpaint_model,
            device=device,
            dtype=dtype,
            cpu_offload=cpu_offload,
            speedups=speedups,
        )
    raise ModelUnavailable(f"{spec.path}: the {spec.family} family is not supported")
