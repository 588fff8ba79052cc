"""Find and load a model: a local folder, a Hugging Face id already in the local cache, the
built-in model, or the tiny random test stack (once built: see `engine.render.factory`). Never
touches the network.

A missing or broken model raises `ModelUnavailable` with what is missing and how to fetch it on
a connected machine; the worker resolves its model at start (`engine.render.factory.find_model`)
so that happens before any job.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.render.names import BUILTIN_DIR, BUILTIN_MODEL_NAME, TINY_MODEL_NAME, tiny_model_dir

if TYPE_CHECKING:  # torch and diffusers are imported when a model is loaded, not with this module
    import torch

    from engine.render.unclip import ImagineUnCLIPPipeline

# Karlo's components: which class loads each subfolder. Optional ones may be absent.
UNCLIP_COMPONENTS: dict[str, tuple[str, str]] = {
    # CLIPTokenizer for Karlo's folder (its tokenizer_config says so); the built-in model's
    # word-start tokenizer (engine/render/tokenizer.py) loads as the fast tokenizer it was saved as.
    "tokenizer": ("transformers", "AutoTokenizer"),
    "text_encoder": ("transformers", "CLIPTextModelWithProjection"),
    "text_proj": ("unclip", "UnCLIPTextProjModel"),
    "decoder": ("diffusers", "UNet2DConditionModel"),
    "decoder_scheduler": ("diffusers", "UnCLIPScheduler"),
    "prior": ("diffusers", "PriorTransformer"),
    "prior_scheduler": ("diffusers", "UnCLIPScheduler"),
    "ar_prior": ("imagine", "AutoregressivePrior"),  # the built-in model's autoregressive prior
    "super_res_first": ("diffusers", "UNet2DModel"),
    "super_res_last": ("diffusers", "UNet2DModel"),
    "super_res_scheduler": ("diffusers", "UnCLIPScheduler"),
    "image_encoder": ("transformers", "CLIPVisionModelWithProjection"),
    "feature_extractor": ("transformers", "CLIPImageProcessor"),
}
REQUIRED_UNCLIP = ("tokenizer", "text_encoder", "text_proj", "decoder", "decoder_scheduler")


class ModelUnavailable(RuntimeError):
    """The configured model cannot be found or loaded; the message says how to fix it."""


@dataclass
class ModelSpec:
    """A resolved model: where it is, what family it belongs to, and its own metadata."""

    name: str
    path: Path
    family: str  # unclip | kandinsky22
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def description(self) -> str:
        return self.meta.get("description", self.name)

    @property
    def defaults(self) -> dict[str, Any]:
        return dict(self.meta.get("defaults", {}))


def set_offline() -> None:
    """Make Hugging Face libraries fail instead of downloading (set before they are imported)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def quiet_libraries() -> None:
    """No progress bars or chatter from diffusers/transformers in a worker's log."""
    import diffusers
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()


def resolve_model(name: str, data_dir: Path) -> ModelSpec:
    """Turn a configured model name into a folder on disk, or explain why there is none."""
    set_offline()
    if name == BUILTIN_MODEL_NAME:
        path = BUILTIN_DIR
        if not (path / "model_index.json").exists():
            raise ModelUnavailable(
                f"the built-in model's weights are missing from {path}. They are committed to the "
                "repository: restore them with `git checkout -- engine/builtin/weights`, or "
                "retrain them with `imagine-bot train-builtin`."
            )
    elif name == TINY_MODEL_NAME:
        # Built by engine.render.factory.find_model the first time it is named: this module only
        # loads, so it never imports the builder (which itself uses this module's settings).
        path = tiny_model_dir(data_dir)
        if not (path / "model_index.json").exists():
            raise ModelUnavailable(
                f"the tiny random test model is not built in {path}: name it to the worker (which "
                "builds it on first use) or build it with engine.render.tiny.build_tiny_unclip"
            )
    elif Path(name).expanduser().exists():
        path = Path(name).expanduser().resolve()
    elif "/" in name and not name.startswith((".", "/")):
        path = _from_hf_cache(name)
    else:
        raise ModelUnavailable(
            f"model {name!r} is neither a folder nor a Hugging Face id: set IMAGINE_RENDER_MODEL "
            "to 'builtin', a model folder, or an id like kakaobrain/karlo-v1-alpha"
        )
    index_file = path / "model_index.json"
    if not index_file.exists():
        raise ModelUnavailable(f"{path} has no model_index.json: it is not a diffusers model folder")
    index = json.loads(index_file.read_text())
    meta_file = path / "imagine.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    meta.setdefault("name", name)
    return ModelSpec(name=name, path=path, family=_family(index, path), meta=meta)


def _from_hf_cache(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as error:  # noqa: BLE001 - every failure here means "not in the cache"
        raise ModelUnavailable(
            f"model {repo_id!r} is not in the local Hugging Face cache and imagine-bot never "
            f"downloads at run time. On a connected machine run `huggingface-cli download "
            f"{repo_id}` (or `hf download {repo_id}`), then copy the cache (HF_HOME) or the "
            f"folder to this machine and point IMAGINE_RENDER_MODEL at it. ({error})"
        ) from error


def _family(index: dict[str, Any], path: Path) -> str:
    cls = index.get("_class_name", "")
    if cls in ("UnCLIPPipeline", "UnCLIPImageVariationPipeline"):
        return "unclip"
    if cls == "KandinskyV22Pipeline":
        return "kandinsky22"
    if cls == "KandinskyV22PriorPipeline":
        return "kandinsky22-prior"
    if cls == "KandinskyV22InpaintPipeline":
        return "kandinsky22-inpaint"  # beside a decoder: IMAGINE_RENDER_INPAINT_MODEL
    raise ModelUnavailable(f"{path}: pipeline class {cls!r} is not an unCLIP family imagine-bot runs")


def weights_hash(path: Path) -> str:
    """sha256 over every weight file (names and bytes), so a render records exactly what ran."""
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*")):
        if file.suffix in (".safetensors", ".bin") and file.is_file():
            digest.update(str(file.relative_to(path)).encode())
            with file.open("rb") as stream:
                while chunk := stream.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


def load_unclip(spec: ModelSpec, *, device: str = "cpu", dtype: torch.dtype | None = None) -> ImagineUnCLIPPipeline:
    """Load each component of an unCLIP folder with its class and assemble our pipeline.

    Loading component by component avoids diffusers' `from_pretrained` lookup of
    UnCLIPTextProjModel, which fails since the unCLIP pipelines moved to the deprecated folder.
    """
    set_offline()
    import diffusers
    import transformers
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel

    from engine.render.tokenizer import check_tokenizer
    from engine.render.unclip import ImagineUnCLIPPipeline

    quiet_libraries()
    missing = [name for name in REQUIRED_UNCLIP if not (spec.path / name).is_dir()]
    if missing:
        raise ModelUnavailable(f"{spec.path} is missing component folder(s): {', '.join(missing)}")
    parts: dict[str, Any] = {}
    for name, (library, class_name) in UNCLIP_COMPONENTS.items():
        folder = spec.path / name
        if not folder.is_dir():
            continue
        if library == "unclip":
            cls = UnCLIPTextProjModel
        elif library == "imagine":
            from engine.render.ar_prior import AutoregressivePrior

            cls = AutoregressivePrior
        elif library == "diffusers":
            cls = getattr(diffusers, class_name)
        else:
            cls = getattr(transformers, class_name)
        kwargs: dict[str, Any] = {}
        if (
            dtype is not None
            and hasattr(cls, "save_pretrained")
            and "Scheduler" not in class_name
            and class_name not in ("AutoTokenizer", "CLIPImageProcessor")
        ):
            kwargs["dtype"] = dtype
        try:
            parts[name] = cls.from_pretrained(folder, **kwargs)
        except Exception as error:
            raise ModelUnavailable(f"{folder}: cannot load {class_name}: {error}") from error
    if "super_res_first" in parts and "super_res_last" not in parts:
        # A model may ship one upsampler for every step (the built-in one does, to stay small).
        parts["super_res_last"] = parts["super_res_first"]
    try:
        check_tokenizer(parts["tokenizer"], spec.path / "tokenizer")
    except RuntimeError as error:
        raise ModelUnavailable(str(error)) from error
    _check_dimensions(parts, spec.path)
    pipe = ImagineUnCLIPPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _check_dimensions(parts: dict[str, Any], path: Path) -> None:
    """Catch mismatched components at load, not as a shape error in the middle of a job."""
    dim = parts["text_encoder"].config.projection_dim
    checks = [("text_proj clip_embeddings_dim", parts["text_proj"].config.clip_embeddings_dim)]
    if "prior" in parts:
        checks.append(("prior embedding_dim", parts["prior"].config.embedding_dim))
    if "ar_prior" in parts:
        checks.append(("ar_prior embedding_dim", parts["ar_prior"].config.embedding_dim))
    if "image_encoder" in parts:
        checks.append(("image_encoder projection_dim", parts["image_encoder"].config.projection_dim))
    for what, value in checks:
        if value != dim:
            raise ModelUnavailable(f"{path}: {what} is {value}, but the text encoder projects to {dim}")
    out = parts["decoder"].config.out_channels
    if out != 2 * parts["decoder"].config.in_channels:
        raise ModelUnavailable(f"{path}: the decoder must predict a learned variance (out_channels=6)")
