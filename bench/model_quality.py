"""How well does the built-in model draw what it is asked? Prints one JSON object.

Every prompt comes from the colour × shape × background triples held out of training
(`engine.builtin.scenes.HELD_OUT_TRIPLES`), and every image is rendered through the code users
hit: `engine.render.families.unclip.UnCLIPRenderer` (text → image, variations) or, for the
no-prior baseline, the same `ImagineUnCLIPPipeline` with `prior="none"`. Images are judged by
`engine.builtin.checker`: pixel statistics for colours and positions, a small CNN trained only on
generator labels for shapes; the model's own CLIP judges nothing.

    python bench/model_quality.py            # 200 prompts × 4 images, ~80 min on 2 cores
                                             # (+8 the first time: the shape checker)
    python bench/model_quality.py --quick    # 40 prompts, for tuning

Output: {"prior": {"foreground_colour", "background_colour", "shape", "position", "binding"},
"ar_prior": {same, with the autoregressive prior: `--prior ar`}, "no_prior": {same},
"phrasings": {family: {"foreground_colour", "background_colour", "shape"}} for every phrasing
family held out of training (engine/builtin/phrasings.py: prompts as people type them),
"variations": {"keep_colour_and_shape", "mean_abs_pixel_diff"},
"edit": {"outside_mean_abs_diff", "inside_follows_prompt", "zoomout_centre_mean_abs_diff"}}, accuracies
as fractions; `--details FILE` also writes counts, settings and timings, and, for a model whose
variations start from the source image (strength < 1), the same scores for pure variations —
"pair_binding": the two-object scenes decoded from their own image embeddings alone, and
"pair_binding_with_caption": the same embeddings with their prompts (the binding of a perfect
prior: below the prior's own binding, the decoder is what binds poorly).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# First, always: bench/engine.py (this folder is sys.path[0]) must not shadow the engine package.
sys.path.insert(0, str(ROOT))

from engine.builtin.captions import RELATIONS, caption_pair, caption_single  # noqa: E402
from engine.builtin.drawing import render_scene  # noqa: E402
from engine.builtin.phrasings import HELD_OUT_FAMILIES, Subject, phrase  # noqa: E402
from engine.builtin.scenes import (  # noqa: E402
    HELD_OUT_TRIPLES,
    POSITION_NAMES,
    Scene,
    sample_pair,
    sample_single,
    single_object_scene,
)

IMAGES_PER_PROMPT = 4
JOBS_PER_CALL = 8


@dataclass(frozen=True)
class SingleProbe:
    prompt: str
    colour: str
    shape: str
    background: str
    position: str | None  # None: the prompt names no position


@dataclass(frozen=True)
class PairProbe:
    prompt: str
    arrangement: str
    first: tuple[str, str]  # (colour, shape) of the left/top object
    second: tuple[str, str]
    background: str
    scene: Scene  # what the prompt describes: its image, decoded from its own embedding, is the ceiling


def single_probes(count: int, seed: int = 7) -> list[SingleProbe]:
    """`count` prompts over the held-out triples; two in three name a position."""
    rng = np.random.default_rng(seed)
    triples = sorted(HELD_OUT_TRIPLES)
    order = rng.permutation(len(triples))
    probes = []
    for i in range(count):
        colour, shape, background = triples[order[i % len(triples)]]
        position = None if i % 3 == 0 else POSITION_NAMES[int(rng.integers(len(POSITION_NAMES)))]
        scene = single_object_scene(rng, colour, shape, background, "medium", position or "centre")
        prompt, _ = caption_single(
            rng, scene, name_background=True, name_colour=True, name_position=position is not None, name_size=False
        )
        probes.append(SingleProbe(prompt, colour, shape, background, position))
    return probes


def pair_probes(count: int, seed: int = 8) -> list[PairProbe]:
    """Two-object prompts with a direction ("left of", "above", ...), one object held out."""
    rng = np.random.default_rng(seed)
    probes = []
    while len(probes) < count:
        scene = sample_pair(rng, split="heldout")
        fitting = [w for w, a, f in RELATIONS if a == scene.arrangement and f is not None]
        relation = fitting[int(rng.integers(len(fitting)))]
        prompt, _ = caption_pair(rng, scene, name_background=True, relation=relation)
        first, second = ((o.colour, o.shape) for o in scene.objects)
        probes.append(PairProbe(prompt, scene.arrangement, first, second, scene.background, scene))
    return probes


def phrasing_probes(per_family: int, seed: int = 12) -> dict[str, list[SingleProbe]]:
    """`per_family` prompts in each held-out phrasing family, over the held-out triples (the
    same triples for every family, so families differ only in wording)."""
    rng = np.random.default_rng(seed)
    triples = sorted(HELD_OUT_TRIPLES)
    chosen = [triples[i] for i in rng.permutation(len(triples))[:per_family]]
    return {
        family: [SingleProbe(phrase(family, Subject(c, s, b), rng), c, s, b, None) for c, s, b in chosen]
        for family in HELD_OUT_FAMILIES
    }


# --- rendering ---------------------------------------------------------------------------------


def _decode(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


def _encode(picture: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def render_with_prior(renderer, prompts: list[str], params: dict, seed: int) -> list[list[np.ndarray]]:
    """IMAGES_PER_PROMPT images per prompt through `UnCLIPRenderer.render_batch` (the worker path)."""
    from engine.render.types import RenderJob

    jobs = [
        RenderJob(
            generation_id=i,
            operation="text2image",
            prompt=p,
            negative_prompt=None,
            seed=seed + 100 * i,
            n=IMAGES_PER_PROMPT,
            params=dict(params),
        )
        for i, p in enumerate(prompts)
    ]
    images = []
    for start in range(0, len(jobs), JOBS_PER_CALL):
        chunk = jobs[start : start + JOBS_PER_CALL]
        for result in renderer.render_batch(chunk, [lambda *_: None] * len(chunk)):
            images.append([_decode(image.png) for image in result.images])
    return images


def render_without_prior(renderer, prompts: list[str], params: dict, seed: int) -> list[list[np.ndarray]]:
    """The same prompts and seeds with the prior bypassed: the text embedding goes to the decoder."""
    return _render_through_pipe(renderer, prompts, params, seed, embeddings=None)


def render_from_embeddings(renderer, prompts: list[str], embeddings, params: dict, seed: int) -> list[list[np.ndarray]]:
    """The prompts' images decoded from the given CLIP image embeddings (one per prompt) instead of
    the prior's: what the decoder draws when the prior is perfect, with the caption beside it."""
    return _render_through_pipe(renderer, prompts, params, seed, embeddings=embeddings)


def _render_through_pipe(renderer, prompts: list[str], params: dict, seed: int, embeddings) -> list[list[np.ndarray]]:
    """IMAGES_PER_PROMPT images per prompt straight through the pipeline, with the seeds
    `render_with_prior` gives the same prompts: no prior (`embeddings` None) or given embeddings."""
    import torch

    from engine.render.types import RenderJob

    settings = renderer.resolved_settings(RenderJob(0, "text2image", "", None, 0, 1, dict(params)))
    images = []
    for start in range(0, len(prompts), JOBS_PER_CALL):
        batch_prompts, generators, rows = [], [], []
        for i in range(start, min(start + JOBS_PER_CALL, len(prompts))):
            for k in range(IMAGES_PER_PROMPT):
                batch_prompts.append(prompts[i])
                generators.append(torch.Generator("cpu").manual_seed(seed + 100 * i + k))
                rows.append(i)
        given = {"prior": "none"} if embeddings is None else {"image_embeds": embeddings[rows]}
        output = renderer.pipe(
            batch_prompts,
            generators,
            decoder_num_inference_steps=settings["decoder_steps"],
            super_res_num_inference_steps=settings["super_res_steps"],
            # The model's own upsampler strength, as the worker passes it (the built-in model's
            # 0.5 starts from the noised upscale; 1.0, the pipeline's default, from pure noise).
            super_res_strength=settings["super_res_strength"],
            decoder_guidance_scale=settings["decoder_guidance"],
            **given,
        )
        pictures = (output.images * 255).round().astype(np.uint8)
        for j in range(0, len(pictures), IMAGES_PER_PROMPT):
            images.append(list(pictures[j : j + IMAGES_PER_PROMPT]))
    return images


def render_variations(renderer, sources: list[np.ndarray], params: dict, seed: int) -> list[list[np.ndarray]]:
    """Variations as the worker asks for them: empty prompt, the source's CLIP image embedding and
    its PNG (used only when the variation strength, the model's default or `params`, is < 1)."""
    from PIL import Image

    from engine.render.base import embedding_to_bytes
    from engine.render.types import RenderJob

    embeddings = renderer.pipe.encode_images([Image.fromarray(s) for s in sources]).float().cpu()
    jobs = [
        RenderJob(
            generation_id=i,
            operation="variation",
            prompt="",
            negative_prompt=None,
            seed=seed + 100 * i,
            n=IMAGES_PER_PROMPT,
            params=dict(params),
            source_embeddings=(embedding_to_bytes(embeddings[i]),),
            source_images=(_encode(sources[i]),),
        )
        for i in range(len(sources))
    ]
    images = []
    for start in range(0, len(jobs), JOBS_PER_CALL):
        chunk = jobs[start : start + JOBS_PER_CALL]
        for result in renderer.render_batch(chunk, [lambda *_: None] * len(chunk)):
            images.append([_decode(image.png) for image in result.images])
    return images


def edit_probes(count: int, seed: int = 11) -> list[tuple[np.ndarray, str, tuple[str, str], str]]:
    """(a held-out scene with one object on the left, an edit prompt for the right half naming
    another held-out object on the same background, that object, the background)."""
    rng = np.random.default_rng(seed)
    triples = sorted(HELD_OUT_TRIPLES)
    probes = []
    for _ in range(count):
        colour, shape, background = triples[int(rng.integers(len(triples)))]
        others = [t for t in triples if t[2] == background and t[:2] != (colour, shape)] or triples
        new_colour, new_shape, _ = others[int(rng.integers(len(others)))]
        scene = single_object_scene(rng, colour, shape, background, "medium", "left")
        right = single_object_scene(rng, new_colour, new_shape, background, "medium", "right")
        prompt, _ = caption_single(
            rng, right, name_background=True, name_colour=True, name_position=True, name_size=False
        )
        probes.append((scene, prompt, (new_colour, new_shape), background))
    return probes


def render_edits(
    renderer, sources: list[np.ndarray], prompts: list[str], spec: dict, params: dict, seed: int
) -> list[list[np.ndarray]]:
    """Edits as the worker asks for them: the source's PNG and embedding, the edit spec."""
    from PIL import Image

    from engine.render.base import embedding_to_bytes
    from engine.render.types import RenderJob

    embeddings = renderer.pipe.encode_images([Image.fromarray(s) for s in sources]).float().cpu()
    images = []
    for i, (source, prompt) in enumerate(zip(sources, prompts, strict=True)):
        job = RenderJob(
            generation_id=i,
            operation="edit",
            prompt=prompt,
            negative_prompt=None,
            seed=seed + 100 * i,
            n=IMAGES_PER_PROMPT,
            params={**params, "edit": spec},
            source_embeddings=(embedding_to_bytes(embeddings[i]),),
            source_images=(_encode(source),),
        )
        images.append([_decode(image.png) for image in renderer.render(job, lambda *_: None).images])
    return images


def score_edits(checker, probes, sources, edited, zoomed) -> dict:
    """Outside the edited half the picture is the source's; inside, the prompt's object is drawn;
    a 2× zoom-out keeps the source, shrunk, in the middle."""
    from PIL import Image

    outside, followed, total, centre = [], 0, 0, []
    for (_scene, _prompt, wanted, _background), source, group in zip(probes, sources, edited, strict=True):
        half = source.shape[1] // 2
        for image, (_, right) in zip(group, checker.judge_pairs(group, "horizontal"), strict=True):
            total += 1
            outside.append(np.abs(image[:, :half].astype(np.float32) - source[:, :half]).mean() / 255)
            followed += (right.foreground, right.shape) == wanted
    for source, group in zip(sources, zoomed, strict=True):
        size = source.shape[0]
        inner = np.asarray(
            Image.fromarray(source).resize((size // 2, size // 2), Image.Resampling.LANCZOS), dtype=np.float32
        )
        q = size // 4
        for image in group:
            centre.append(np.abs(image[q : q + size // 2, q : q + size // 2].astype(np.float32) - inner).mean() / 255)
    return {
        "outside_mean_abs_diff": float(np.mean(outside)),
        "inside_follows_prompt": followed / max(1, total),
        "zoomout_centre_mean_abs_diff": float(np.mean(centre)),
        "_edits": total,
    }


# --- scoring -----------------------------------------------------------------------------------


def score_singles(checker, probes: list[SingleProbe], images: list[list[np.ndarray]]) -> dict:
    counts = {"foreground_colour": 0, "background_colour": 0, "shape": 0, "position": 0}
    totals = {"images": 0, "positioned_images": 0}
    for probe, group in zip(probes, images, strict=True):
        for verdict in checker.judge(group):
            totals["images"] += 1
            counts["foreground_colour"] += verdict.foreground == probe.colour
            counts["background_colour"] += verdict.background == probe.background
            counts["shape"] += verdict.shape == probe.shape
            if probe.position is not None:
                totals["positioned_images"] += 1
                counts["position"] += verdict.position == probe.position
    return {
        "foreground_colour": counts["foreground_colour"] / totals["images"],
        "background_colour": counts["background_colour"] / totals["images"],
        "shape": counts["shape"] / totals["images"],
        "position": counts["position"] / max(1, totals["positioned_images"]),
        **{f"_{k}": v for k, v in totals.items()},
    }


def score_pairs(checker, probes: list[PairProbe], images: list[list[np.ndarray]]) -> dict:
    """Binding: both objects have the right colour and shape, on the right side."""
    correct = total = 0
    for probe, group in zip(probes, images, strict=True):
        for first, second in checker.judge_pairs(group, probe.arrangement):
            total += 1
            correct += (first.foreground, first.shape) == probe.first and (
                second.foreground,
                second.shape,
            ) == probe.second
    return {"binding": correct / max(1, total), "_pair_images": total}


def score_variations(checker, scenes, sources, variations) -> dict:
    kept = total = 0
    differences = []
    for scene, source, group in zip(scenes, sources, variations, strict=True):
        obj = scene.objects[0]
        for verdict, image in zip(checker.judge(group), group, strict=True):
            total += 1
            kept += (
                verdict.foreground == obj.colour
                and verdict.background == scene.background
                and verdict.shape == obj.shape
            )
            differences.append(np.abs(image.astype(np.float32) - source.astype(np.float32)).mean() / 255)
    return {
        "keep_colour_and_shape": kept / max(1, total),
        "mean_abs_pixel_diff": float(np.mean(differences)),
        "_variations": total,
    }


def public(scores: dict) -> dict:
    return {k: round(v, 4) for k, v in scores.items() if not k.startswith("_")}


# --- entry point -------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="builtin", help="model name or folder (default: builtin)")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--quick", action="store_true", help="40 prompts, 16 pairs, 12 variation sources")
    parser.add_argument("--prompts", type=int, default=None, help="single-object prompts (default 200)")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="sampling override, e.g. decoder_guidance=4 or decoder_steps=20",
    )
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda; the numbers differ only by float noise")
    parser.add_argument("--details", type=Path, default=None, help="also write counts and timings here")
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated parts to skip: prior,ar_prior,no_prior,binding,phrasings,variations,edit",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from engine.builtin.checker import SceneChecker, ShapeClassifier
    from engine.render.factory import load_renderer
    from engine.render.types import RenderJob

    if args.threads:
        torch.set_num_threads(args.threads)
    params: dict = {}
    for item in args.set:
        key, _, value = item.partition("=")
        params[key] = float(value) if "." in value or "guidance" in key or key == "strength" else int(value)
    prompts = args.prompts or (40 if args.quick else 200)
    pairs = 16 if args.quick else 60
    sources = 12 if args.quick else 50
    skip = set(filter(None, args.skip.split(",")))

    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal started
        now = time.perf_counter()
        timings[name] = round(now - started, 1)
        started = now
        print(f"[model_quality] {name}: {timings[name]} s", file=sys.stderr, flush=True)

    checker = SceneChecker(ShapeClassifier.load_or_train(args.data_dir / "builtin-bench" / "shape_classifier.pt"))
    lap("shape classifier")
    renderer = load_renderer(args.model, args.data_dir, device=args.device)
    lap("load model")

    singles = single_probes(prompts)
    pair_list = pair_probes(pairs)
    single_prompts = [p.prompt for p in singles]
    pair_prompts = [p.prompt for p in pair_list]
    zeros = {"foreground_colour": 0.0, "background_colour": 0.0, "shape": 0.0, "position": 0.0, "binding": 0.0}

    def text_scores(render: Callable[[list[str]], list[list[np.ndarray]]], name: str) -> dict:
        """Single-object scores of one way from text to image, and binding unless skipped."""
        scores = score_singles(checker, singles, render(single_prompts))
        if "binding" not in skip:
            scores.update(score_pairs(checker, pair_list, render(pair_prompts)))
        lap(name)
        return scores

    ar_params = {**params, "prior": "ar"}
    has_ar = getattr(renderer.pipe, "ar_prior", None) is not None
    prior = (
        dict(zeros)
        if "prior" in skip
        else text_scores(lambda ps: render_with_prior(renderer, ps, params, args.seed), "prior")
    )
    ar_prior = (
        dict(zeros)
        if "ar_prior" in skip or not has_ar
        else text_scores(lambda ps: render_with_prior(renderer, ps, ar_params, args.seed), "ar prior")
    )
    no_prior = (
        dict(zeros)
        if "no_prior" in skip
        else text_scores(lambda ps: render_without_prior(renderer, ps, params, args.seed), "no prior")
    )
    phrasings: dict[str, dict] = {}
    if "phrasings" not in skip:
        for family, probes in phrasing_probes(8 if args.quick else 25).items():
            rendered = render_with_prior(renderer, [p.prompt for p in probes], params, args.seed)
            phrasings[family] = score_singles(checker, probes, rendered)
        lap("phrasings")
    variations: dict = {"keep_colour_and_shape": 0.0, "mean_abs_pixel_diff": 0.0}
    pure_variations: dict | None = None
    if "variations" not in skip:
        rng = np.random.default_rng(9)
        scenes = [sample_single(rng, split="heldout") for _ in range(sources)]
        source_images = [np.asarray(render_scene(s, renderer.pipe.output_size)) for s in scenes]
        variations = score_variations(
            checker, scenes, source_images, render_variations(renderer, source_images, params, args.seed)
        )
        lap("variations")
        job = RenderJob(0, "variation", "", None, 0, 1, dict(params))
        if renderer.resolved_settings(job)["strength"] < 1.0:
            # The model starts variations from the source image by default; also measure the
            # paper's pure variations (the image embedding alone), for the details file.
            pure_variations = score_variations(
                checker,
                scenes,
                source_images,
                render_variations(renderer, source_images, {**params, "strength": 1.0}, args.seed),
            )
            if "binding" not in skip:
                # The two-object scenes decoded from their own CLIP image embeddings: the binding
                # no prior can beat, as far as the image embedding carries it (the decoder also
                # reads the caption, which pure variations do not have).
                pair_sources = [np.asarray(render_scene(p.scene, renderer.pipe.output_size)) for p in pair_list]
                pure_pairs = render_variations(renderer, pair_sources, {**params, "strength": 1.0}, args.seed)
                pure_variations["pair_binding"] = score_pairs(checker, pair_list, pure_pairs)["binding"]
                # The same embeddings with their prompts beside them: the binding of a perfect
                # prior, so a low score from the prompt can be laid at the prior or the decoder.
                from PIL import Image

                true_embeddings = renderer.pipe.encode_images([Image.fromarray(p) for p in pair_sources]).float()
                with_caption = render_from_embeddings(renderer, pair_prompts, true_embeddings, params, args.seed)
                pure_variations["pair_binding_with_caption"] = score_pairs(checker, pair_list, with_caption)["binding"]
            lap("pure variations")

    edits: dict = {"outside_mean_abs_diff": 0.0, "inside_follows_prompt": 0.0, "zoomout_centre_mean_abs_diff": 0.0}
    if "edit" not in skip:
        probes = edit_probes(sources)
        size = renderer.pipe.output_size
        edit_sources = [np.asarray(render_scene(scene, size)) for scene, *_ in probes]
        edited = render_edits(
            renderer,
            edit_sources,
            [p for _, p, _, _ in probes],
            {"op": "region", "box": [0.5, 0.0, 0.5, 1.0]},
            params,
            args.seed,
        )
        zoomed = render_edits(
            renderer, edit_sources, [""] * len(probes), {"op": "zoomout", "factor": 2.0}, params, args.seed
        )
        edits = score_edits(checker, probes, edit_sources, edited, zoomed)
        lap("edits")

    result = {
        "prior": {**dict(zeros), **public(prior)},
        "ar_prior": {**dict(zeros), **public(ar_prior)},
        "no_prior": {**dict(zeros), **public(no_prior)},
        "phrasings": {
            family: {k: v for k, v in public(scores).items() if k != "position"} for family, scores in phrasings.items()
        },
        "variations": public(variations),
        "edit": public(edits),
    }
    print(json.dumps(result))
    if args.details:
        args.details.parent.mkdir(parents=True, exist_ok=True)
        args.details.write_text(
            json.dumps(
                {
                    "result": result,
                    "counts": {
                        "prior": prior,
                        "ar_prior": ar_prior,
                        "no_prior": no_prior,
                        "phrasings": phrasings,
                        "variations": variations,
                        "edit": edits,
                    },
                    "phrasing_prompts": {f: [p.prompt for p in ps] for f, ps in phrasing_probes(3).items()},
                    "pure_variations": pure_variations,
                    "settings": renderer.resolved_settings(RenderJob(0, "text2image", "", None, 0, 1, dict(params))),
                    "model": str(renderer.spec.path),
                    "prompts": prompts,
                    "pairs": pairs,
                    "sources": sources,
                    "timings_s": timings,
                    "threads": torch.get_num_threads(),
                    "device": args.device,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
