"""The built-in model's training script, run end to end at smoke size, and what it exports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from engine.builtin import train  # noqa: E402


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> tuple[Path, Path]:
    """Train every stage at toy size once for this module: (work folder, weights folder)."""
    root = tmp_path_factory.mktemp("builtin-smoke")
    work, out = root / "work", root / "weights"
    assert train.main(["--smoke", "--work", str(work), "--out", str(out), "--threads", "2"]) == 0
    return work, out


def test_smoke_run_writes_a_karlo_layout_folder(smoke_run):
    """The export has model_index.json, imagine.json and every component folder, one upsampler."""
    _, out = smoke_run
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "UnCLIPPipeline"
    for name in (
        "tokenizer",
        "text_encoder",
        "text_proj",
        "decoder",
        "prior",
        "ar_prior",
        "image_encoder",
        "feature_extractor",
        "super_res_first",
        "decoder_scheduler",
        "prior_scheduler",
        "super_res_scheduler",
    ):
        assert (out / name).is_dir(), name
    assert not (out / "super_res_last").exists()
    meta = json.loads((out / "imagine.json").read_text())
    assert meta["trained"] is True
    assert set(meta["training"]["stages"]) == set(train.STAGES)
    assert {"prior_steps", "decoder_steps", "super_res_steps"} <= set(meta["defaults"])


def test_smoke_weights_load_and_render_through_the_renderer(smoke_run, tmp_path):
    """The loader accepts the exported folder and UnCLIPRenderer renders 64 px images from it,
    text to image and variations."""
    import torch

    from engine.render.families.unclip import UnCLIPRenderer
    from engine.render.loader import load_unclip, resolve_model
    from engine.render.types import RenderJob

    _, out = smoke_run
    spec = resolve_model(str(out), tmp_path)
    pipe = load_unclip(spec, dtype=torch.float32)
    assert pipe.output_size == 64 and pipe.decoder_size == 32
    # The prior's embedding statistics were set from data (zeros would flatten every embedding).
    assert torch.isfinite(pipe.prior.clip_std).all() and float(pipe.prior.clip_std.detach().min()) > 0

    renderer = UnCLIPRenderer(spec, pipe, device="cpu", dtype=torch.float32)
    fast = {"prior_steps": 2, "decoder_steps": 2, "super_res_steps": 2}
    result = renderer.render(
        RenderJob(1, "text2image", "a red star on a blue background", None, 3, 4, fast), lambda *_: None
    )
    assert [(i.width, i.height) for i in result.images] == [(64, 64)] * 4
    assert result.grid_png is not None
    # The autoregressive prior trained beside the diffusion one draws too (--prior ar).
    autoregressive = renderer.render(
        RenderJob(3, "text2image", "a red star", None, 3, 2, {**fast, "prior": "ar"}), lambda *_: None
    )
    assert len(autoregressive.images) == 2 and autoregressive.info["prior"] == "ar"

    variation = renderer.render(
        RenderJob(2, "variation", "", None, 4, 2, fast, source_embeddings=(result.images[0].embedding,)),
        lambda *_: None,
    )
    assert len(variation.images) == 2


def test_rerun_resumes_instead_of_retraining(smoke_run):
    """Running again on a finished work folder skips every stage (each resumes from its
    checkpoint) and exports the same weights."""
    work, out = smoke_run
    before = {p.name: p.stat().st_mtime_ns for p in work.glob("*/checkpoint.pt")}
    assert train.main(["--smoke", "--work", str(work), "--out", str(out), "--no-export"]) == 0
    after = {p.name: p.stat().st_mtime_ns for p in work.glob("*/checkpoint.pt")}
    assert before == after
    assert "already trained" in (work / "train.log").read_text()


def test_a_stage_can_be_continued_from_its_checkpoint(tmp_path, smoke_run):
    """--steps STAGE=N trains a finished stage further from where it stopped."""
    import shutil

    work, _ = smoke_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    steps = train.PLANS["smoke"]["upsampler"].steps + 5
    assert (
        train.main(
            ["--smoke", "--work", str(copy), "--stages", "upsampler", "--steps", f"upsampler={steps}", "--no-export"]
        )
        == 0
    )
    log = (copy / "train.log").read_text()
    assert f"upsampler: resuming at step {steps - 5} of {steps}" in log


def test_unknown_stage_is_a_usage_error(tmp_path, capsys):
    """--stages with a name that is not a stage exits 2 and names it."""
    assert train.main(["--smoke", "--work", str(tmp_path), "--stages", "clip,vae"]) == 2
    assert "vae" in capsys.readouterr().err


def test_clip_probe_reads_a_training_checkpoint(clip_probe, smoke_run, capsys):
    """bench/clip_probe.py --work probes the CLIP checkpoint of a training folder and says its step."""
    work, _ = smoke_run
    assert clip_probe.main(["--work", str(work), "--scenes", "100", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] == train.PLANS["smoke"]["clip"].steps and result["scenes"] == 100
    assert all(0.0 <= result[key] <= 1.0 for key in clip_probe.ATTRIBUTES)
    assert set(result["pairs"]) == set(clip_probe.PAIR_ATTRIBUTES)
    assert all(0.0 <= value <= 1.0 for value in result["pairs"].values())


def test_clip_probe_without_a_checkpoint_is_a_usage_error(clip_probe, tmp_path, capsys):
    """--work on a folder that has no CLIP checkpoint exits 2 and says how to make one; no JSON."""
    assert clip_probe.main(["--work", str(tmp_path), "--scenes", "10"]) == 2
    captured = capsys.readouterr()
    assert "no CLIP checkpoint" in captured.err and "--stages clip" in captured.err
    assert captured.out == ""


@pytest.fixture(scope="module")
def smoke_decoder_stage(smoke_run):
    """The decoder stage of the smoke run's work folder (its CLIP and tokenizer), untrained."""
    from engine.builtin.models import Architecture

    work, _ = smoke_run
    ctx = train.TrainContext(arch=Architecture.smoke(), work=work, seed=0)
    ctx.tokenizer = train._tokenizer(ctx, work / "tokenizer")
    return train.DecoderStage(ctx)


def test_worker_processes_make_the_same_batches_as_the_main_process(smoke_decoder_stage):
    """Batches are a function of the step alone: made ahead by data-loader workers (as on a GPU
    run) they equal the ones the main process makes, so --workers does not change the data."""
    import torch

    stage = smoke_decoder_stage
    plan = train.PLANS["smoke"]["decoder"]
    inline = list(train.batches(stage, plan, start=plan.steps - 3, workers=0))
    ahead = list(train.batches(stage, plan, start=plan.steps - 3, workers=2))
    assert len(inline) == len(ahead) == 3
    for mine, theirs in zip(inline, ahead, strict=True):
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert torch.equal(mine[key], theirs[key]), key
    assert not torch.equal(inline[0]["noise"], inline[1]["noise"])


def test_decoder_noise_gets_a_colour_offset_from_the_plans_step_on(smoke_decoder_stage):
    """From `offset_noise_from` on, each image's noise gets one constant per colour channel
    (offset noise); before it, and everything else in the batch, is what a plan without offset
    makes, so the first phase of the shipped recipe is unchanged."""
    from dataclasses import replace

    import torch

    stage = smoke_decoder_stage
    with_offset = replace(train.PLANS["smoke"]["decoder"], offset_noise_from=10)
    plain = replace(with_offset, offset_noise_from=None)

    assert torch.equal(stage.batch(9, with_offset)["noise"], stage.batch(9, plain)["noise"])
    offset, base = stage.batch(10, with_offset), stage.batch(10, plain)
    for key in base.keys() - {"noise"}:
        assert torch.equal(offset[key], base[key]), key
    shift = offset["noise"] - base["noise"]
    per_channel = shift[:, :, :1, :1]
    assert torch.allclose(shift, per_channel.expand_as(shift), atol=1e-6)
    assert per_channel.abs().min() > 0 and per_channel.std() < 3 * train.OFFSET_NOISE
    assert len(per_channel.flatten().unique()) == per_channel.numel()  # per image and channel


def test_decoder_and_prior_batches_take_the_plans_share_of_two_object_scenes(smoke_decoder_stage, monkeypatch):
    """`pair_fraction` in a stage's plan is the share of two-object scenes its batches sample
    (the decoder's and the priors'): a recipe for binding changes the data, not the code."""
    from dataclasses import replace

    from engine.builtin import captions

    asked: list[float] = []
    sample = captions.sample_examples

    def recording(rng, size, *, pair_fraction, **kwargs):
        asked.append(pair_fraction)
        return sample(rng, size, pair_fraction=pair_fraction, **kwargs)

    monkeypatch.setattr(captions, "sample_examples", recording)
    plan = train.PLANS["smoke"]["decoder"]
    smoke_decoder_stage.batch(0, plan)
    smoke_decoder_stage.batch(0, replace(plan, pair_fraction=0.75))
    train.prior_batch(smoke_decoder_stage.ctx, train.batch_rng(0, "prior", 0), 4, 0.5)
    assert asked == [train.PAIR_FRACTION, 0.75, 0.5]


def test_plan_change_sets_one_field_of_one_stage():
    """`--plan STAGE.FIELD=VALUE` changes that field only, typed as the field is; the plans it
    started from are untouched."""
    plans = train.PLANS["finetune"]
    changed = train.with_plan_change(plans, "decoder.pair_fraction=0.5")
    changed = train.with_plan_change(changed, "decoder.offset_noise_from=none")
    changed = train.with_plan_change(changed, "clip.cosine=false")
    assert changed["decoder"].pair_fraction == 0.5 and changed["decoder"].offset_noise_from is None
    assert changed["clip"].cosine is False
    assert changed["decoder"].lr == plans["decoder"].lr and changed["prior"] == plans["prior"]
    assert plans["decoder"].pair_fraction == train.PAIR_FRACTION and plans["clip"].cosine is True


@pytest.mark.parametrize(
    "change, message",
    [
        ("decoder", "expected STAGE.FIELD=VALUE"),
        ("vae.lr=1e-4", "'vae' is not a stage"),
        ("decoder.speed=2", "'speed' is not a plan field"),
        ("decoder.lr=fast", "decoder.lr: 'fast' is not a number"),
        ("decoder.steps=2.5", "decoder.steps: '2.5' is not a whole number"),
        ("decoder.cosine=yes", "decoder.cosine: 'yes' is not true or false"),
        ("decoder.pair_fraction=1.5", "a share between 0 and 1"),
        ("decoder.lr=0", "must be above 0"),
    ],
)
def test_bad_plan_change_is_a_usage_error(tmp_path, capsys, change, message):
    """A malformed or impossible `--plan` exits 2 naming what is wrong, before anything is
    trained or written."""
    assert train.main(["--smoke", "--work", str(tmp_path / "work"), "--plan", change]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


def test_clip_shape_heads_weigh_more_from_the_plans_step_on(smoke_run):
    """From `shape_emphasis_from` on, the CLIP stage's shape heads weigh SHAPE_EMPHASIS times the
    others in the attribute loss; before it the loss is the plain recipe's, and the batch's data
    is the same either way."""
    from dataclasses import replace

    import torch

    from engine.builtin.models import Architecture

    work, _ = smoke_run
    ctx = train.TrainContext(arch=Architecture.smoke(), work=work, seed=0)
    ctx.tokenizer = train._tokenizer(ctx, work / "tokenizer")
    stage = train.ClipStage(ctx)
    emphasis = replace(train.PLANS["smoke"]["clip"], shape_emphasis_from=10)
    before, after = stage.batch(9, emphasis), stage.batch(10, emphasis)
    assert float(before["shape_weight"]) == 1.0 and float(after["shape_weight"]) == train.SHAPE_EMPHASIS
    plain = stage.batch(10, replace(emphasis, shape_emphasis_from=None))
    assert float(plain["shape_weight"]) == 1.0
    assert torch.equal(plain["pixels"], after["pixels"]) and torch.equal(plain["ids"], after["ids"])

    embeds = torch.nn.functional.normalize(torch.randn(len(after["pixels"]), ctx.arch.embed_dim), dim=-1)
    labels = after["image_labels"]
    weighted, unweighted = stage.attribute_loss(embeds, labels, 4.0), stage.attribute_loss(embeds, labels)
    only_shape = {
        name: t if name in train.SHAPE_HEADS else torch.full_like(t, train.IGNORE) for name, t in labels.items()
    }
    assert weighted > unweighted
    assert torch.allclose(stage.attribute_loss(embeds, only_shape, 4.0), 4 * stage.attribute_loss(embeds, only_shape))


def test_unavailable_device_is_a_usage_error(tmp_path, capsys):
    """--device cuda on a machine without a GPU (or a made-up device) exits 2 before training."""
    import torch

    device = "tpu" if torch.cuda.is_available() else "cuda"
    assert train.main(["--smoke", "--work", str(tmp_path), "--device", device]) == 2
    assert f"--device {device}" in capsys.readouterr().err
    assert not (tmp_path / "clip").exists()


def test_clip_probe_reads_the_prior_embeddings_per_prompt_split(clip_probe, smoke_run, capsys):
    """--prior N runs the model's prior on N held-out and N training prompts and reads its
    embeddings with the same probes: one accuracy per attribute and split."""
    _, out = smoke_run
    assert clip_probe.main(["--model", str(out), "--scenes", "100", "--prior", "4", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    for split in ("prior_heldout", "prior_train"):
        assert set(result[split]) == {"foreground_colour", "background_colour", "shape"}
        assert all(0.0 <= value <= 1.0 for value in result[split].values())


def test_prior_prompts_come_from_the_split_they_name(clip_probe):
    """Held-out prompts use only held-out triples; training prompts none of them."""
    from engine.builtin.scenes import HELD_OUT_TRIPLES

    def triple(labels):
        return labels["foreground_colour"], labels["shape"], labels["background_colour"]

    assert all(triple(labels) in HELD_OUT_TRIPLES for _, labels in clip_probe.prior_prompts(30, "heldout", 3))
    assert not any(triple(labels) in HELD_OUT_TRIPLES for _, labels in clip_probe.prior_prompts(60, "train", 3))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--device", "cuda:99"], "--device cuda:99"),
        (["--device", "not-a-device"], "--device not-a-device"),
        (["--workers", "-1"], "--workers -1"),
    ],
)
def test_bad_device_or_workers_is_a_usage_error(tmp_path, capsys, args, message):
    """A CUDA index past the visible GPUs, a device torch does not know, or a negative worker
    count exits 2 with the option named, before anything is trained or written."""
    assert train.main(["--smoke", "--work", str(tmp_path / "work"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize(
    "avx512_bf16, amx, expected", [(False, False, False), (True, False, True), (False, True, True)]
)
def test_unets_autocast_to_bf16_only_where_the_cpu_computes_it(monkeypatch, tmp_path, avx512_bf16, amx, expected):
    """bf16 autocast speeds the UNets up on CPUs with native bf16 and slows them ~2.7x where it is
    emulated, so a CPU without AVX512-BF16 or AMX trains them in fp32."""
    import contextlib

    import torch

    from engine.builtin.models import Architecture

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert train.fast_bf16("cpu") is expected
    stage = train.UpsamplerStage(train.TrainContext(arch=Architecture.smoke(), work=tmp_path, seed=0))
    context = stage.autocast()
    assert isinstance(context, torch.autocast) is expected
    assert isinstance(context, contextlib.nullcontext) is not expected
    with context:
        out = stage.upsampler(torch.zeros(1, 6, 64, 64), torch.tensor([10])).sample
    assert out.dtype == (torch.bfloat16 if expected else torch.float32)


def test_a_work_folder_keeps_the_tokenizer_it_was_trained_with(smoke_run, tmp_path):
    """A resumed run reuses the saved tokenizer rather than rebuilding it: the saved one is what
    the CLIP stage learned its token ids from. Shown by a marker token only the saved one has."""
    from transformers import CLIPTokenizer

    from engine.builtin.models import Architecture

    work, _ = smoke_run
    saved = CLIPTokenizer.from_pretrained(work / "tokenizer")
    saved.add_tokens(["<kept-marker>"])
    folder = tmp_path / "tokenizer"
    saved.save_pretrained(folder)
    ctx = train.TrainContext(arch=Architecture.smoke(), work=tmp_path, seed=0)
    assert "<kept-marker>" in train._tokenizer(ctx, folder).get_vocab()


def test_an_ar_prior_can_be_added_to_an_exported_model(smoke_run, tmp_path):
    """`--base` trains only the AR prior, on the exported model's own tokenizer and CLIP, and
    writes a copy of the model with it (model_index.json and its training time included)."""
    _, out = smoke_run
    added = tmp_path / "with-ar"
    args = ["--base", str(out), "--stages", "ar_prior", "--steps", "ar_prior=4", "--threads", "2"]
    assert train.main([*args, "--work", str(tmp_path / "work"), "--out", str(added)]) == 0
    index = json.loads((added / "model_index.json").read_text())
    assert index["ar_prior"] == ["imagine", "AutoregressivePrior"]
    assert json.loads((added / "imagine.json").read_text())["training"]["stages"]["ar_prior"]["steps"] == 4
    assert (added / "decoder").is_dir() and (out / "ar_prior").is_dir()


def test_base_trains_only_the_ar_prior(smoke_run, tmp_path, capsys):
    _, out = smoke_run
    assert train.main(["--base", str(out), "--stages", "prior", "--work", str(tmp_path)]) == 2
    assert "only --stages ar_prior" in capsys.readouterr().err


def test_finetune_tunes_the_text_tower_and_the_parts_that_read_it(smoke_run, tmp_path):
    """`--base B --finetune` starts clip, prior and ar_prior from B's weights, keeps B's image
    tower, decoder, tokenizer and upsampler byte for byte, and records its stages apart from B's;
    the decoder is tuned only when named."""
    from safetensors.torch import load_file

    _, base = smoke_run
    tuned, with_decoder = tmp_path / "tuned", tmp_path / "with-decoder"
    args = ["--base", str(base), "--finetune", "--smoke", "--threads", "2", "--work", str(tmp_path / "work")]
    assert train.main([*args, "--out", str(tuned)]) == 0
    assert train.main([*args, "--stages", "clip,decoder", "--out", str(with_decoder)]) == 0

    def weights(folder: Path, part: str) -> dict:
        (file,) = sorted((folder / part).glob("*.safetensors"))
        return load_file(file)

    def same(part: str, folder: Path) -> bool:
        before, after = weights(base, part), weights(folder, part)
        return all(before[k].equal(after[k]) for k in before)

    assert [
        part for part in ("image_encoder", "super_res_first", "decoder", "text_proj") if not same(part, tuned)
    ] == []
    assert [part for part in ("text_encoder", "prior", "ar_prior") if same(part, tuned)] == []
    assert not same("decoder", with_decoder) and not same("text_proj", with_decoder) and same("prior", with_decoder)
    assert (base / "tokenizer" / "tokenizer.json").read_text() == (tuned / "tokenizer" / "tokenizer.json").read_text()
    training = json.loads((tuned / "imagine.json").read_text())["training"]
    base_training = json.loads((base / "imagine.json").read_text())["training"]
    assert training["stages"] == base_training["stages"]
    (tuning,) = training["tunings"]
    assert tuning["kind"] == "finetune" and set(tuning["stages"]) == set(train.FINETUNE_STAGES)
    assert training["total_seconds"] == base_training["total_seconds"] + tuning["seconds"]


def test_image_tower_retrains_the_image_side_and_keeps_the_text_side(smoke_run, tmp_path):
    """`--base B --finetune --image-tower` trains a new CLIP image tower at 64 px against B's
    frozen text tower and tunes prior, AR prior and decoder to its embedding: B's text tower,
    tokenizer and upsampler stay byte for byte, the feature extractor and the architecture say
    64 px, and the result renders text to image, the AR prior and a variation."""
    import torch
    from safetensors.torch import load_file

    from engine.render.families.unclip import UnCLIPRenderer
    from engine.render.loader import load_unclip, resolve_model
    from engine.render.types import RenderJob

    _, base = smoke_run
    out = tmp_path / "image-tower"
    args = ["--base", str(base), "--finetune", "--image-tower", "--smoke", "--threads", "2"]
    assert train.main([*args, "--work", str(tmp_path / "work"), "--out", str(out)]) == 0

    def same(part: str) -> bool:
        (before,) = sorted((base / part).glob("*.safetensors"))
        (after,) = sorted((out / part).glob("*.safetensors"))
        return before.read_bytes() == after.read_bytes()

    assert [part for part in ("text_encoder", "super_res_first") if not same(part)] == []
    assert (base / "tokenizer" / "tokenizer.json").read_text() == (out / "tokenizer" / "tokenizer.json").read_text()
    for part in ("prior", "ar_prior", "decoder", "text_proj"):
        assert not same(part), part
    meta = json.loads((out / "imagine.json").read_text())
    assert meta["architecture"]["clip_size"] == train.IMAGE_TOWER_SIZE
    (tuning,) = meta["training"]["tunings"]
    assert tuning["kind"] == "image_tower" and set(tuning["stages"]) == set(train.IMAGE_TOWER_STAGES)
    extractor = json.loads((out / "feature_extractor" / "preprocessor_config.json").read_text())
    assert extractor["crop_size"] == {"height": 64, "width": 64}
    vision = json.loads((out / "image_encoder" / "config.json").read_text())
    assert (vision["image_size"], vision["patch_size"]) == (64, 8)

    spec = resolve_model(str(out), tmp_path / "data")
    pipe = load_unclip(spec, dtype=torch.float32)
    # The prior's statistics are the new tower's, not the base's.
    assert not torch.equal(
        pipe.prior.clip_mean, load_file(next((base / "prior").glob("*.safetensors")))["clip_mean"].float()
    )
    renderer = UnCLIPRenderer(spec, pipe, device="cpu", dtype=torch.float32)
    fast = {"prior_steps": 2, "decoder_steps": 2, "super_res_steps": 2}
    result = renderer.render(RenderJob(1, "text2image", "a red star", None, 3, 2, fast), lambda *_: None)
    assert [(i.width, i.height) for i in result.images] == [(64, 64)] * 2
    assert renderer.render(
        RenderJob(3, "text2image", "a red star", None, 3, 1, {**fast, "prior": "ar"}), lambda *_: None
    ).images
    variation = renderer.render(
        RenderJob(2, "variation", "", None, 4, 2, fast, source_embeddings=(result.images[0].embedding,)),
        lambda *_: None,
    )
    assert len(variation.images) == 2


def test_a_second_tuning_keeps_the_first_ones_record(smoke_run, tmp_path):
    """Tuning a tuned model appends its record (with the --plan changes it ran with) after the
    base's, and the total counts both; a base exported before the list (one record per kind
    under its own key) has those moved into it first, in the order they were made."""
    _, base = smoke_run
    legacy = tmp_path / "legacy"
    shutil.copytree(base, legacy)
    meta = json.loads((legacy / "imagine.json").read_text())
    stage = {"seconds": 5, "steps": 4, "batch": 8, "device": "cpu", "workers": 0}
    meta["training"]["finetune"] = {"recipe": "text", "stages": {"clip": stage}, "seconds": 5}
    meta["training"]["image_tower"] = {"recipe": "tower", "stages": {"clip": stage}, "seconds": 5}
    meta["training"]["total_seconds"] += 10
    (legacy / "imagine.json").write_text(json.dumps(meta))

    out = tmp_path / "decoder-tuned"
    args = ["--base", str(legacy), "--finetune", "--smoke", "--threads", "2", "--stages", "decoder"]
    plan = ["--plan", "decoder.pair_fraction=0.5"]
    assert train.main([*args, *plan, "--work", str(tmp_path / "work"), "--out", str(out)]) == 0

    training = json.loads((out / "imagine.json").read_text())["training"]
    assert "finetune" not in training and "image_tower" not in training
    kinds = [(t["kind"], t.get("recipe")) for t in training["tunings"]]
    assert kinds == [("finetune", "text"), ("image_tower", "tower"), ("finetune", train.TUNING_RECIPES["finetune"])]
    last = training["tunings"][-1]
    assert last["plan_changes"] == ["decoder.pair_fraction=0.5"]
    assert last["stages"]["decoder"]["pair_fraction"] == 0.5
    assert training["total_seconds"] == meta["training"]["total_seconds"] + last["seconds"]


def test_image_tower_goes_with_finetune(smoke_run, tmp_path, capsys):
    _, base = smoke_run
    assert train.main(["--base", str(base), "--image-tower", "--work", str(tmp_path)]) == 2
    assert "--image-tower: goes with --finetune" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--finetune"], "--finetune: name the weights to start from with --base"),
        (["--finetune", "--base", "BASE", "--stages", "upsampler"], "upsampler do not read text"),
    ],
)
def test_finetune_refuses_what_it_cannot_do(smoke_run, tmp_path, capsys, args, message):
    _, base = smoke_run
    args = [str(base) if a == "BASE" else a for a in args]
    assert train.main([*args, "--work", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("word_starts", [False, True], ids=["clip", "word_starts"])
def test_subword_dropout_without_dropout_is_the_tokenizer(smoke_run, word_starts):
    """The training tokenization with BPE-dropout at 0 gives exactly the tokenizer's ids, long and
    odd captions included; with dropout the pieces still spell the caption, and the same seed
    splits the same way. For both tokenizers: CLIP's, and the one that marks word starts."""
    import numpy as np
    from transformers import AutoTokenizer

    from engine.builtin.captions import sample_examples
    from engine.builtin.phrasings import training_caption
    from engine.render.tokenizer import build_clip_tokenizer

    work, _ = smoke_run
    tokenizer = AutoTokenizer.from_pretrained(work / "tokenizer")
    if word_starts:
        corpus = [e.caption for e in sample_examples(np.random.default_rng(1), 2000, caption=training_caption)]
        length = tokenizer.model_max_length
        tokenizer = build_clip_tokenizer(corpus, vocab_size=600, max_length=length, word_starts=True)
    captions = [e.caption for e in sample_examples(np.random.default_rng(0), 200, caption=training_caption)]
    captions += ["A RÉD star!! on blue, w/ bg", "bakcground purpel", "x" * 80, ""]
    exact = train.SubwordDropout(tokenizer, 0.0)
    ids, mask = train.tokenize(tokenizer, captions)
    for caption, row, row_mask in zip(captions, ids, mask, strict=True):
        assert exact.encode(caption, np.random.default_rng(0)) == row[row_mask].tolist(), caption

    dropping = train.SubwordDropout(tokenizer, 0.5)
    word = "triangle"
    splits = {tuple(dropping.split(word, np.random.default_rng(seed))) for seed in range(20)}
    assert all("".join(pieces).replace("##", "") == word + "</w>" for pieces in splits)
    if word_starts:  # every piece but the first is marked as the inside of the word
        assert all(piece.startswith("##") for pieces in splits for piece in pieces[1:])
    assert len(splits) > 3 and (word + "</w>",) != max(splits, key=len)
    first = train.tokenize(tokenizer, captions[:50], np.random.default_rng(7))
    again = train.tokenize(tokenizer, captions[:50], np.random.default_rng(7))
    assert first[0].equal(again[0]) and first[1].equal(again[1])


def test_word_starts_replaces_the_tokenizer_and_the_text_tower_carries_over(smoke_run, tmp_path):
    """`--finetune --word-starts` swaps the base's tokenizer for one that marks word starts: clip
    tunes the text tower on it from the base's token table, a later run on the same work folder
    trains the priors on that tower, and each export holds the new tokenizer with the tower that
    reads it (the decoder, image tower and upsampler as the base's). The result loads and renders."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from engine.render.families.unclip import UnCLIPRenderer
    from engine.render.loader import load_unclip, resolve_model
    from engine.render.types import RenderJob

    _, base = smoke_run
    args = ["--base", str(base), "--finetune", "--word-starts", "--smoke", "--threads", "2"]
    work, clip_out, out = tmp_path / "work", tmp_path / "clip", tmp_path / "priors"
    assert train.main([*args, "--stages", "clip", "--work", str(work), "--out", str(clip_out)]) == 0
    assert train.main([*args, "--stages", "prior,ar_prior", "--work", str(work), "--out", str(out)]) == 0

    def weights(folder: Path, part: str) -> dict:
        (file,) = sorted((folder / part).glob("*.safetensors"))
        return load_file(file)

    old, new = AutoTokenizer.from_pretrained(base / "tokenizer"), AutoTokenizer.from_pretrained(out / "tokenizer")
    assert json.loads((out / "tokenizer" / "tokenizer.json").read_text())["model"]["continuing_subword_prefix"] == "##"
    index = json.loads((out / "model_index.json").read_text())
    assert index["tokenizer"] == ["transformers", "PreTrainedTokenizerFast"]
    table = weights(out, "text_encoder")["text_model.embeddings.token_embedding.weight"]
    assert table.shape[0] == len(new) > len(old)
    for part in ("text_encoder", "prior", "ar_prior"):
        assert any(not t.equal(weights(base, part)[k]) for k, t in weights(out, part).items()), part
    for part in ("decoder", "text_proj", "image_encoder", "super_res_first"):
        assert all(t.equal(weights(base, part)[k]) for k, t in weights(out, part).items()), part
    assert json.loads((out / "imagine.json").read_text())["training"]["tunings"][-1]["tokenizer"].startswith("new")
    # The priors' run exported the tower the clip run tuned, not the base's.
    assert all(t.equal(weights(clip_out, "text_encoder")[k]) for k, t in weights(out, "text_encoder").items())

    spec = resolve_model(str(out), tmp_path / "data")
    pipe = load_unclip(spec, dtype=torch.float32)
    assert pipe.tokenizer("a colored star").input_ids == new("a colored star").input_ids
    renderer = UnCLIPRenderer(spec, pipe, device="cpu", dtype=torch.float32)
    fast = {"prior_steps": 2, "decoder_steps": 2, "super_res_steps": 2}
    for prior in ("diffusion", "ar"):
        job = RenderJob(1, "text2image", "a star coloured red", None, 3, 2, {**fast, "prior": prior})
        assert [(i.width, i.height) for i in renderer.render(job, lambda *_: None).images] == [(64, 64)] * 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--word-starts"], "--word-starts: goes with --finetune"),
        (["--word-starts", "--finetune", "--image-tower"], "--word-starts: goes with --finetune"),
        (["--word-starts", "--finetune", "--stages", "prior"], "train --stages clip first"),
    ],
)
def test_word_starts_refuses_what_it_cannot_do(smoke_run, tmp_path, capsys, args, message):
    """A new tokenizer needs a text tower tuned to it: only --finetune makes one, and a run of the
    later stages alone needs the clip stage's checkpoint in its work folder. Nothing is written."""
    _, base = smoke_run
    out = tmp_path / "out"
    assert train.main(["--base", str(base), *args, "--work", str(tmp_path / "work"), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_new_tokenizer_starts_from_the_base_towers_token_table(smoke_run):
    """`carried_token_table`: a piece both tokenizers have keeps its row, a marked inner piece
    takes its unmarked form's, and a piece the base never had the mean of the base's pieces
    for it. So a template caption that both split alike starts out embedded exactly as before."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from engine.builtin.captions import sample_examples
    from engine.builtin.phrasings import training_caption
    from engine.render.tokenizer import build_clip_tokenizer

    work, _ = smoke_run
    old = AutoTokenizer.from_pretrained(work / "tokenizer")
    corpus = [e.caption for e in sample_examples(np.random.default_rng(1), 2000, caption=training_caption)]
    new = build_clip_tokenizer(corpus, vocab_size=600, max_length=old.model_max_length, word_starts=True)
    table = torch.randn(len(old), 8)
    rows = train.carried_token_table(old, new, table)
    old_vocab, new_vocab = old.get_vocab(), new.get_vocab()
    assert rows.shape == (len(new), 8)
    assert rows[new_vocab["red</w>"]].equal(table[old_vocab["red</w>"]])
    assert rows[new_vocab["##q"]].equal(table[old_vocab["q"]])
    fresh = next(t for t in new_vocab if t.endswith("</w>") and t.removeprefix("##") not in old_vocab)
    pieces = train.SubwordDropout(old, 0.0).split(fresh.removeprefix("##").removesuffix("</w>"), None)
    assert len(pieces) > 1
    assert torch.allclose(rows[new_vocab[fresh]], table[[old_vocab[p] for p in pieces]].mean(0))
    caption = "a red star on a blue background"
    assert old.tokenize(caption) == new.tokenize(caption)
    assert rows[new(caption).input_ids].equal(table[old(caption).input_ids])
