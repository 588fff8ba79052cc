"""Speed-ups beyond a plain diffusers call, applied in place to a pipeline's networks at load.

Each is an operator setting (IMAGINE_RENDER_*, engine/config.py) and each is applied only where
it can run; `apply_speedups` returns a `SpeedupReport` that names what it applied and, for every
other network and setting, why not (the worker logs it at start, bench/gpu_check.py prints it):

- **fused QKV** (`fuse_qkv`): diffusers' `fuse_qkv_projections()`, one matmul for q, k and v.
  diffusers refuses it for attention with added key/value projections (Karlo's and Kandinsky's
  SimpleCrossAttn UNets): those are reported as skipped with diffusers' reason.
- **channels-last** (`channels_last`): NHWC weights for the convolutional networks, the layout
  tensor cores' convolutions want. Networks without 2-d convolutions are skipped.
- **regional compile** (`compile="regional"`): `torch.compile` of each repeated block
  (diffusers' `_repeated_blocks` where the model names some it has, else every ResnetBlock2D,
  Attention and BasicTransformerBlock), in place with `module.compile()`. Blocks of one class
  and shape share one compiled graph, so compile time is that of a few blocks, not of a UNet.
- **CUDA graphs** (`cuda_graphs`, CUDA only): the fixed-shape networks (Karlo's 64 px decoder,
  its upsampler, the priors) are compiled whole with mode "reduce-overhead" (CUDA graphs
  replayed instead of hundreds of kernel launches per step), and their batches are padded up to
  `BUCKETS` so the shapes repeat and a handful of graphs serve every batch. Padded rows repeat
  the last row and are dropped from the output; every row of a UNet is computed independently.
- **compile cache** (`cache_dir`): inductor's FX-graph, AOT-autograd and Triton caches are
  pointed at a persistent folder (TORCHINDUCTOR_CACHE_DIR) so a restarted worker loads compiled
  kernels instead of compiling again (the tiny upsampler's blocks on this CPU: 90 s cold,
  7 s warm).

torch is imported only by `apply_speedups`, so the settings and the report are plain data.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

COMPILE_MODES = ("off", "regional")
#: Blocks compiled one by one when the model names no `_repeated_blocks` it actually has (Karlo's
#: and Kandinsky's UNets have no BasicTransformerBlock, the class diffusers names for them).
REGIONAL_BLOCKS = ("BasicTransformerBlock", "ResnetBlock2D", "Attention")
#: Batch rows (images, x2 with classifier-free guidance) a CUDA-graphed network is padded up to.
#: Grids are 4 images, so most batches are multiples of 4 (8 rows guided); 12, 24 and 48 keep
#: the padding of 3 or 6 grids at a third instead of two thirds.
BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)
#: Graphs per compiled function: every bucket, for a few shapes (Kandinsky's sizes) each.
RECOMPILE_LIMIT = 64


@dataclass(frozen=True)
class Speedups:
    """What to apply (from RenderSettings; all off is a plain diffusers call)."""

    compile: str = "off"  # off | regional
    cuda_graphs: bool = False
    channels_last: bool = False
    fuse_qkv: bool = False
    cache_dir: Path | None = None
    #: torch.compile's backend: inductor in production; tests and CPU smoke runs use "eager" or
    #: "aot_eager" (dynamo's tracing without code generation, seconds instead of minutes).
    backend: str = "inductor"

    def __post_init__(self) -> None:
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, not {self.compile!r}")

    @property
    def any(self) -> bool:
        return self.compile != "off" or self.cuda_graphs or self.channels_last or self.fuse_qkv


@dataclass
class SpeedupReport:
    """What `apply_speedups` did: `applied` and `skipped` lines, each "network: what (why)"."""

    applied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def apply(self, network: str, what: str) -> None:
        self.applied.append(f"{network}: {what}")

    def skip(self, network: str, what: str, why: str) -> None:
        self.skipped.append(f"{network}: {what} skipped ({why})")

    def as_dict(self) -> dict[str, list[str]]:
        return {"applied": list(self.applied), "skipped": list(self.skipped)}

    def __str__(self) -> str:
        return "; ".join(self.applied + self.skipped) or "none asked for"


def use_compile_cache(cache_dir: Path) -> Path:
    """Point inductor's on-disk caches (FX graphs, AOT autograd, Triton kernels) at `cache_dir`.

    Read by inductor when it first compiles, so this must run before the first compile; a
    variable the operator set explicitly wins."""
    folder = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    return folder


def apply_speedups(
    networks: dict[str, Any],
    speedups: Speedups,
    *,
    device: str,
    fixed_shape: Iterable[str] = (),
    offloaded: bool = False,
) -> SpeedupReport:
    """Apply `speedups` in place to `networks` (name → torch module; None entries are ignored).

    `fixed_shape` names the networks called with the same shapes every step (CUDA graphs need
    that); `offloaded` says the weights move between devices (model CPU offload), which CUDA
    graphs cannot follow. The same module under two names (a shared upsampler) is done once."""
    report = SpeedupReport()
    if not speedups.any:
        return report
    seen: dict[int, str] = {}
    unique: dict[str, torch.nn.Module] = {}
    for name, module in networks.items():
        if module is None:
            continue
        if id(module) in seen:
            report.skip(name, "all", f"the same module as {seen[id(module)]}")
            continue
        seen[id(module)] = name
        unique[name] = module
    if speedups.fuse_qkv:
        for name, module in unique.items():
            _fuse_qkv(name, module, report)
    if speedups.channels_last:
        for name, module in unique.items():
            _channels_last(name, module, report)
    graphed = _cuda_graph_networks(unique, speedups, device, set(fixed_shape), offloaded, report)
    if speedups.compile == "regional" or graphed:
        _raise_recompile_limit()
        if speedups.cache_dir is not None and speedups.backend == "inductor":
            folder = use_compile_cache(speedups.cache_dir)
            report.apply("all", f"compile cache in {folder}")
    for name in graphed:
        _graph(name, unique[name], speedups.backend, report)
    if speedups.compile == "regional":
        for name, module in unique.items():
            if name not in graphed:
                _compile_regions(name, module, speedups.backend, report)
    return report


def _fuse_qkv(name: str, module: Any, report: SpeedupReport) -> None:
    if not hasattr(module, "fuse_qkv_projections"):
        report.skip(name, "fused QKV", f"{type(module).__name__} has no fuse_qkv_projections")
        return
    try:
        module.fuse_qkv_projections()
    except ValueError as refused:  # diffusers' refusal: added-KV attention
        report.skip(name, "fused QKV", str(refused).replace("`", ""))
        return
    fused = _fused_layers(module)
    if not fused:
        # The AttentionMixin version (PriorTransformer's) fuses only diffusers' newer attention
        # classes and returns without a word for the classic `Attention`: do what
        # UNet2DConditionModel's version does for it.
        from diffusers.models.attention_processor import Attention, FusedAttnProcessor2_0

        for layer in module.modules():
            if isinstance(layer, Attention):
                layer.fuse_projections(fuse=True)
                layer.set_processor(FusedAttnProcessor2_0())  # type: ignore[arg-type]  # diffusers annotates its base class only; its UNet passes this one too
        fused = _fused_layers(module)
    if not fused:
        report.skip(name, "fused QKV", "no attention layers to fuse")
        return
    report.apply(name, f"fused QKV projections ({fused} attention layers)")


def _fused_layers(module: Any) -> int:
    return sum(1 for layer in module.modules() if getattr(layer, "fused_projections", False))


def _channels_last(name: str, module: torch.nn.Module, report: SpeedupReport) -> None:
    import torch

    if not any(isinstance(m, torch.nn.Conv2d) for m in module.modules()):
        report.skip(name, "channels-last", "no 2-d convolutions")
        return
    module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit the keyword-only form
    report.apply(name, "channels-last weights")


def _cuda_graph_networks(
    networks: dict[str, torch.nn.Module],
    speedups: Speedups,
    device: str,
    fixed_shape: set[str],
    offloaded: bool,
    report: SpeedupReport,
) -> list[str]:
    """The networks to capture in CUDA graphs; the reason for every one that is not."""
    if not speedups.cuda_graphs:
        return []
    why = ""
    if not device.startswith("cuda"):
        why = f"CUDA only, this device is {device}"
    elif offloaded:
        why = "model CPU offload moves the weights, a graph replays fixed addresses"
    elif speedups.backend != "inductor":
        why = f"needs the inductor backend, not {speedups.backend}"
    chosen = []
    for name in networks:
        if why:
            report.skip(name, "CUDA graphs", why)
        elif name not in fixed_shape:
            report.skip(name, "CUDA graphs", "its shapes change from call to call")
        else:
            chosen.append(name)
    return chosen


def _graph(name: str, module: torch.nn.Module, backend: str, report: SpeedupReport) -> None:
    import torch

    # Shapes are left to dynamo's automatic dynamic: the second bucket recompiles with the
    # batch dimension symbolic and every later bucket reuses that code, recording only a new
    # graph (cheap), where dynamic=False would compile the whole network again per bucket.
    compiled = torch.compile(module.forward, backend=backend, mode="reduce-overhead")
    module.forward = pad_to_buckets(compiled, cuda_graphs=True)
    report.apply(name, f"CUDA graphs (whole network, mode reduce-overhead), batches padded to {BUCKETS}")


def _compile_regions(name: str, module: torch.nn.Module, backend: str, report: SpeedupReport) -> None:
    if getattr(module, "_compiled_call_impl", None) is not None:
        report.skip(name, "regional compile", "the whole network is compiled already")
        return
    repeated = set(getattr(module, "_repeated_blocks", None) or ())
    classes = {type(m).__name__ for m in module.modules()}
    counts: dict[str, int] = {}
    compile_repeated_blocks = getattr(module, "compile_repeated_blocks", None)  # diffusers' own regional compile
    if repeated & classes and compile_repeated_blocks is not None:
        compile_repeated_blocks(backend=backend)
        for block in module.modules():
            if type(block).__name__ in repeated:
                counts[type(block).__name__] = counts.get(type(block).__name__, 0) + 1
    # Then every listed block not inside one already compiled (a compiled block's children
    # are compiled with it).
    done: list[str] = []
    for path, block in module.named_modules():
        kind = type(block).__name__
        inside = any(path.startswith(prefix + ".") for prefix in done)
        if getattr(block, "_compiled_call_impl", None) is not None:
            done.append(path)
        elif kind in REGIONAL_BLOCKS and not inside:
            block.compile(backend=backend)
            done.append(path)
            counts[kind] = counts.get(kind, 0) + 1
    if not counts:
        report.skip(name, "regional compile", f"no repeated blocks ({', '.join(REGIONAL_BLOCKS)}) in it")
        return
    blocks = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    report.apply(name, f"regional compile ({backend}) of {blocks}")


def _raise_recompile_limit() -> None:
    # Blocks of one class but different widths, and every batch bucket, are separate graphs of
    # one function; past dynamo's default of 8 it would silently fall back to eager.
    import torch._dynamo

    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
    config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, 16 * RECOMPILE_LIMIT)


def bucket_for(rows: int) -> int:
    """The smallest bucket that holds `rows` (rows itself past the largest)."""
    return next((size for size in BUCKETS if size >= rows), rows)


def pad_to_buckets(forward: Callable[..., Any], *, cuda_graphs: bool = False) -> Callable[..., Any]:
    """`forward` called with its batch padded up to a bucket and the output cut back to size.

    The batch is the first tensor argument's first dimension; every tensor argument (also inside
    a dict, such as added_cond_kwargs) with that first dimension is padded by repeating its last
    row. With `cuda_graphs`, each call starts a new CUDA-graph step and the output is copied out
    of the graph's memory, which the next replay overwrites."""
    import torch

    def pad(value: Any, rows: int, size: int) -> Any:
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == rows:
            return torch.cat([value, value[-1:].expand(size - rows, *value.shape[1:])])
        if isinstance(value, dict):
            return {key: pad(item, rows, size) for key, item in value.items()}
        return value

    def cut(value: Any, rows: int) -> Any:
        if isinstance(value, torch.Tensor):
            return value[:rows].clone() if cuda_graphs else value[:rows]
        if isinstance(value, tuple):
            return type(value)(cut(item, rows) for item in value)
        if isinstance(value, dict):  # diffusers' BaseOutput is an OrderedDict dataclass
            return type(value)(**{key: cut(item, rows) for key, item in value.items()})
        return value

    def padded(*args: Any, **kwargs: Any) -> Any:
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        if first is None or first.dim() == 0:
            return forward(*args, **kwargs)
        rows = first.shape[0]
        size = bucket_for(rows)
        if size != rows:
            args = tuple(pad(a, rows, size) for a in args)
            kwargs = {key: pad(value, rows, size) for key, value in kwargs.items()}
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        return cut(forward(*args, **kwargs), rows)

    return padded
