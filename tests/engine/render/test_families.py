"""Model families through the real loader: tiny random components of exactly the classes each
family uses, saved in that family's folder layout (Karlo, Kandinsky 2.2)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from engine.render.factory import find_model, load_renderer
from engine.render.families.unclip import UnCLIPRenderer
from engine.render.loader import ModelUnavailable, load_unclip, resolve_model
from engine.render.types import RenderError, RenderJob
from tests.conftest import assert_same_pixels


def job(op="text2image", seed=1, n=2, **kw):
    params = kw.pop("params", {})
    return RenderJob(
        kw.pop("id", 1), op, kw.pop("prompt", "a red star"), kw.pop("negative", None), seed, n, params, **kw
    )


def quiet(*_):
    return None


@pytest.fixture(scope="module")
def kandinsky(tmp_path_factory):
    from engine.render.tiny import build_tiny_kandinsky

    folder = build_tiny_kandinsky(tmp_path_factory.mktemp("kandinsky"))
    return load_renderer(str(folder), folder.parent, device="cpu", dtype="float32")


def pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as picture:
        return np.asarray(picture).astype(int)


# --- Kandinsky 2.2 ------------------------------------------------------------------------------


def test_kandinsky_draws_the_asked_aspect(kandinsky):
    """Kandinsky renders aspects natively (multiples of 64, then exact), with a negative prompt."""
    result = kandinsky.render(job(negative="blurry", params={"aspect": "16:9"}), quiet)
    assert [(i.width, i.height) for i in result.images] == [(64, 36), (64, 36)]
    assert result.info["model_family"] == "kandinsky22"
    assert result.info["scheduler"] == "DDPMScheduler"
    assert result.images[0].embedding_dim == 32


def test_kandinsky_batch_equals_solo(kandinsky):
    """A Kandinsky job renders the same pixels alone and in a batch."""
    alone = kandinsky.render(job(id=1, seed=9), quiet)
    batch = kandinsky.render_batch([job(id=2, seed=3, n=1), job(id=1, seed=9)], [quiet, quiet])
    for a, b in zip(alone.images, batch[1].images, strict=True):
        assert_same_pixels(pixels(a.png), pixels(b.png))


def test_kandinsky_variation_blend_strip_upscale(kandinsky):
    """Variations (with strength), blends, strips and upscales run on Kandinsky too."""
    source = kandinsky.render(job(), quiet).images
    embeds = tuple(i.embedding for i in source)
    varied = kandinsky.render(
        job("variation", params={"strength": 0.5}, source_embeddings=embeds[:1], source_images=(source[0].png,)), quiet
    )
    assert varied.info["strength"] == 0.5
    blend = kandinsky.render(job("blend", n=1, source_embeddings=embeds, weights=(1.0, 2.0)), quiet)
    assert len(blend.images) == 1
    strip = kandinsky.render(job("strip", n=3, source_embeddings=embeds), quiet)
    assert len(strip.images) == 3 and strip.grid_png
    up = kandinsky.render(job("upscale", n=1, source_embeddings=embeds[:1], source_images=(source[0].png,)), quiet)
    assert (up.images[0].width, up.images[0].height) == (2 * source[0].width, 2 * source[0].height)


def test_kandinsky_zero_embedding_is_cached(kandinsky, monkeypatch):
    """The prior's black-image embedding is computed once, not per job: a text job runs the
    image encoder only to embed what it drew."""
    calls = []
    encoder = kandinsky.prior_pipe.image_encoder
    original = encoder.forward
    monkeypatch.setattr(encoder, "forward", lambda *a, **k: (calls.append(1), original(*a, **k))[1])
    kandinsky.render(job(), quiet)
    assert len(calls) == 1


# --- unCLIP (Karlo layout) ------------------------------------------------------------------------


def test_karlo_layout_with_shared_upsampler(tiny_model_dir, tmp_path):
    """A Karlo folder that ships one upsampler (no super_res_last) loads and renders."""
    folder = tmp_path / "karlo-like"
    shutil.copytree(tiny_model_dir, folder)
    shutil.rmtree(folder / "super_res_last")
    pipe = load_unclip(resolve_model(str(folder), tmp_path))
    assert pipe.super_res_last is pipe.super_res_first


def test_super_res_strength_starts_the_upsampler_from_the_upscale(tiny_model_dir, tmp_path):
    """A model's imagine.json may start its upsampler part-way down the noise schedule from the
    bicubic upscale (the built-in model does, to keep the decoder's colours): only that share of
    the steps runs, the picture stays near its low-res source, and the setting is recorded."""
    import torch

    folder = tmp_path / "partial-super-res"
    shutil.copytree(tiny_model_dir, folder)
    card = json.loads((folder / "imagine.json").read_text())
    card["defaults"].update(super_res_steps=10, super_res_strength=0.3)
    (folder / "imagine.json").write_text(json.dumps(card))
    renderer = UnCLIPRenderer.load(resolve_model(str(folder), tmp_path), device="cpu", dtype="float32")

    stages: list[str] = []
    result = renderer.render(job(n=1), lambda _fraction, stage: stages.append(stage))
    assert stages.count("upsampler") == 3  # 30 % of 10 steps
    assert result.info["super_res_strength"] == 0.3 and result.info["steps"]["super_res_steps"] == 10

    pipe = renderer.pipe
    small = torch.linspace(-0.8, 0.8, 3 * pipe.decoder_size**2).reshape(1, 3, pipe.decoder_size, -1)
    upscaled = torch.nn.functional.interpolate(
        small, size=(pipe.output_size,) * 2, mode="bicubic", align_corners=False, antialias=True
    )

    def distance(strength: float) -> float:
        generator = [torch.Generator().manual_seed(0)]
        out = pipe.super_resolve(small, generator, num_inference_steps=10, strength=strength)
        return float((out - upscaled).abs().mean())

    assert distance(0.2) < 0.5 * distance(1.0)


def test_variations_model_without_prior(tiny_model_dir, tmp_path):
    """An image-variations folder (no prior) varies images but refuses text clearly."""
    folder = tmp_path / "variations-only"
    shutil.copytree(tiny_model_dir, folder)
    shutil.rmtree(folder / "prior")
    shutil.rmtree(folder / "prior_scheduler")
    renderer = UnCLIPRenderer.load(resolve_model(str(folder), tmp_path), device="cpu", dtype="float32")
    with pytest.raises(RenderError, match="has no prior"):
        renderer.render(job(), quiet)
    picture = Image.new("RGB", (32, 32), (255, 0, 0))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    result = renderer.render(job("variation", n=1, source_images=(buffer.getvalue(),)), quiet)
    assert result.info["embedding"] == "clip_image_encoder"


def test_model_without_image_encoder_cannot_vary_uploads(tiny_model_dir, tmp_path):
    """Without a CLIP image encoder an uploaded image cannot be varied: a clear error."""
    folder = tmp_path / "no-encoder"
    shutil.copytree(tiny_model_dir, folder)
    shutil.rmtree(folder / "image_encoder")
    renderer = UnCLIPRenderer.load(resolve_model(str(folder), tmp_path), device="cpu", dtype="float32")
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, format="PNG")
    with pytest.raises(RenderError, match="has no CLIP image encoder"):
        renderer.render(job("variation", n=1, source_images=(buffer.getvalue(),)), quiet)


# --- missing and broken models ---------------------------------------------------------------------


def test_missing_models_explain_how_to_fetch(tmp_path, monkeypatch):
    """A model that is not on this machine fails with what is missing and how to fetch it."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelUnavailable, match="huggingface-cli download kakaobrain/karlo-v1-alpha"):
        resolve_model("kakaobrain/karlo-v1-alpha", tmp_path)
    with pytest.raises(ModelUnavailable, match="neither a folder nor a Hugging Face id"):
        resolve_model("karlo", tmp_path)
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(ModelUnavailable, match="has no model_index.json"):
        resolve_model(str(tmp_path / "not-a-model"), tmp_path)


def test_tiny_random_is_built_by_the_factory_the_first_time_it_is_named(tmp_path):
    """IMAGINE_RENDER_MODEL=tiny-random: the factory builds it under the data folder on first
    use; the loader only loads, so on its own it names what is missing."""
    with pytest.raises(ModelUnavailable, match="tiny random test model is not built"):
        resolve_model("tiny-random", tmp_path)
    spec = find_model("tiny-random", tmp_path)
    assert (spec.name, spec.family, spec.path) == ("tiny-random", "unclip", tmp_path / "models" / "tiny-random")
    assert resolve_model("tiny-random", tmp_path).path == spec.path


def test_broken_folders_fail_at_load(tiny_model_dir, tmp_path):
    """Missing components, tokenizer files or mismatched sizes fail at load, by name."""
    folder = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, folder)
    shutil.rmtree(folder / "decoder")
    with pytest.raises(ModelUnavailable, match="missing component folder\\(s\\): decoder"):
        load_unclip(resolve_model(str(folder), tmp_path))
    shutil.rmtree(folder)
    shutil.copytree(tiny_model_dir, folder)
    for file in (folder / "tokenizer").iterdir():
        file.unlink()
    with pytest.raises(ModelUnavailable):
        load_unclip(resolve_model(str(folder), tmp_path))
    shutil.rmtree(folder)
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "text_proj" / "config.json").read_text())
    config["clip_embeddings_dim"] = 16
    (folder / "text_proj" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelUnavailable):
        load_unclip(resolve_model(str(folder), tmp_path))


def test_worker_refuses_to_start_without_its_model(tmp_path):
    """`imagine-bot worker` with a missing model exits at once with the reason, before any job."""
    env = {
        "IMAGINE_DATA_DIR": str(tmp_path),
        "IMAGINE_RENDER_MODEL": "kakaobrain/karlo-v1-alpha",
        "HF_HOME": str(tmp_path / "empty-cache"),
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run([sys.executable, "-m", "bot", "worker"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "cannot start" in done.stderr and "huggingface-cli download kakaobrain/karlo-v1-alpha" in done.stderr


# --- edits, zoom-outs and pans --------------------------------------------------------------------

EDITS = [
    {"op": "region", "box": [0.5, 0.0, 0.5, 1.0]},
    {"op": "zoomout", "factor": 2.0},
    {"op": "pan", "direction": "left"},
]


def _kept_unchanged(source_png: bytes, result_png: bytes, spec: dict) -> None:
    """Outside what the edit draws, the picture is the source's (the kept part of the canvas)."""
    from engine.domain.edits import EditSpec
    from engine.render.editing import canvas_and_mask

    with Image.open(io.BytesIO(result_png)) as result, Image.open(io.BytesIO(source_png)) as source:
        canvas, keep = canvas_and_mask(source, EditSpec.from_dict(spec), result.size)
        drawn = np.asarray(result.convert("RGB"), dtype=float)
        kept = keep >= 1.0
        assert kept.any() and (~kept).any()
        assert np.abs(drawn[kept] - np.asarray(canvas, dtype=float)[kept]).max() <= 1


@pytest.mark.parametrize("spec", EDITS, ids=[e["op"] for e in EDITS])
def test_unclip_edits_draw_only_the_open_part(tiny_model_dir, tmp_path, spec):
    """The unCLIP family (Karlo's layout, random weights): an edit, zoom-out or pan keeps the
    canvas's kept part and draws the rest, with the operation in the PNG's manifest."""
    renderer = load_renderer(str(tiny_model_dir), tmp_path, device="cpu", dtype="float32")
    source = renderer.render(job(n=1), quiet).images[0]
    edited = renderer.render(
        job(
            "edit",
            n=2,
            seed=5,
            params={"edit": spec},
            source_embeddings=(source.embedding,),
            source_images=(source.png,),
        ),
        quiet,
    )
    assert len(edited.images) == 2 and edited.info["edit"] == spec
    for image in edited.images:
        _kept_unchanged(source.png, image.png, spec)


@pytest.mark.parametrize("spec", EDITS, ids=[e["op"] for e in EDITS])
def test_kandinsky_edits_draw_only_the_open_part(kandinsky, spec):
    """Kandinsky 2.2 (random weights) edits on its plain decoder the same way."""
    source = kandinsky.render(job(n=1), quiet).images[0]
    edited = kandinsky.render(
        job(
            "edit",
            n=1,
            seed=5,
            params={"edit": spec},
            source_embeddings=(source.embedding,),
            source_images=(source.png,),
        ),
        quiet,
    )
    assert edited.info["edit"] == spec
    _kept_unchanged(source.png, edited.images[0].png, spec)


@pytest.mark.parametrize("spec", EDITS, ids=[e["op"] for e in EDITS])
def test_kandinsky_edits_use_the_inpainting_decoder_when_configured(tmp_path_factory, spec, monkeypatch):
    """With IMAGINE_RENDER_INPAINT_MODEL (a KandinskyV22InpaintPipeline folder), edits are drawn
    by diffusers' inpainting pipeline, not masked sampling on the plain decoder; the kept part is
    still the source's."""
    from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2 import KandinskyV22Pipeline
    from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2_inpainting import KandinskyV22InpaintPipeline

    from engine.render.tiny import build_tiny_kandinsky

    folder = build_tiny_kandinsky(tmp_path_factory.mktemp("kandinsky-inpaint"), inpaint=True)
    renderer = load_renderer(
        str(folder),
        folder.parent,
        device="cpu",
        dtype="float32",
        inpaint_model=str(folder.parent / "decoder-inpaint"),
    )
    assert isinstance(renderer.inpaint_pipe, KandinskyV22InpaintPipeline)
    source = renderer.render(job(n=1), quiet).images[0]
    calls = []
    for pipeline in (KandinskyV22Pipeline, KandinskyV22InpaintPipeline):
        original = pipeline.__call__

        def spy(self, *args, _original=original, _name=pipeline.__name__, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(pipeline, "__call__", spy)
    steps = []
    edited = renderer.render(
        job(
            "edit",
            n=2,
            seed=5,
            params={"edit": spec},
            source_embeddings=(source.embedding,),
            source_images=(source.png,),
        ),
        lambda *report: steps.append(report),
    )
    assert calls == ["KandinskyV22InpaintPipeline"]
    assert len(edited.images) == 2 and edited.info["edit"] == spec
    assert steps, "the inpainting decoder's steps are reported as progress"
    for image in edited.images:
        _kept_unchanged(source.png, image.png, spec)


def test_an_inpainting_model_that_does_not_fit_is_refused_at_load(kandinsky, tiny_model_dir, tmp_path):
    """A misconfigured IMAGINE_RENDER_INPAINT_MODEL stops the worker at start with the reason,
    instead of failing (or being ignored) at the first edit."""
    decoder = kandinsky.spec.path
    with pytest.raises(ModelUnavailable, match="not a Kandinsky 2.2 inpainting decoder"):
        load_renderer(str(decoder), decoder.parent, device="cpu", dtype="float32", inpaint_model=str(decoder))
    with pytest.raises(ModelUnavailable, match="for Kandinsky 2.2 decoders"):
        load_renderer(str(tiny_model_dir), tmp_path, device="cpu", dtype="float32", inpaint_model=str(decoder))
