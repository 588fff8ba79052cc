"""What does the built-in CLIP's image embedding know? A linear probe per attribute.

The built-in model can only draw what its CLIP image embedding encodes: the prior predicts that
embedding and the decoder draws from it. This renders fresh single-object training scenes, embeds
them with the shipped vision tower (through its own feature extractor, as the pipeline does), and
fits one logistic-regression probe per attribute (foreground colour, background colour, shape,
position) on 80 % of them; the accuracy on the other 20 % says how linearly readable each
attribute is. Chance is 1/12 for colours, 1/9 for shapes, 1/5 for positions.

    python bench/clip_probe.py [--model engine/builtin/weights] [--scenes 1500] [--seed 3]
    python bench/clip_probe.py --work data/builtin-train     # a training run's CLIP checkpoint

Prints {"scenes": N, "foreground_colour": a, "background_colour": b, "shape": c, "position": d,
"pairs": {"first_colour", "first_shape", "second_colour", "second_shape"}} — the last from N
two-object scenes: whether each object's colour and shape can be read apart, which two-object
binding needs (with --work also "step": the checkpoint's training step; the run need not have
finished).

    python bench/clip_probe.py --prior 200   # + what the prior's embeddings say, per prompt split

With --prior N the same probes also read the embeddings the model's prior predicts (its shipped
sampling settings, one per prompt) for N prompts of held-out colour × shape × background triples
and N of training scenes: {"prior_heldout": {"foreground_colour", "background_colour", "shape"},
"prior_train": {same}}. A gap between the two says the text side does not generalise to unseen
combinations.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported inside the functions: --help should not pay for it
    import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ATTRIBUTES = {
    "foreground_colour": lambda scene: scene.objects[0].colour,
    "background_colour": lambda scene: scene.background,
    "shape": lambda scene: scene.objects[0].shape,
    "position": lambda scene: scene.objects[0].position,
}
#: Two-object scenes: can each object's colour and shape be read apart (what binding needs)?
PAIR_ATTRIBUTES = {
    "first_colour": lambda scene: scene.objects[0].colour,
    "first_shape": lambda scene: scene.objects[0].shape,
    "second_colour": lambda scene: scene.objects[1].colour,
    "second_shape": lambda scene: scene.objects[1].shape,
}


def shipped_tower(model_dir: Path):
    from transformers import CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection.from_pretrained(model_dir / "image_encoder").float().eval()


def checkpoint_tower(work: Path):
    """The vision tower of a `train-builtin --work` folder's CLIP checkpoint and its step, or
    None when the folder has no CLIP checkpoint."""
    from engine.builtin.models import Architecture, build_image_encoder
    from engine.builtin.train import latest_state

    state = latest_state(work, "clip")
    if state is None or not (work / "architecture.json").exists():
        return None
    weights, step = state
    architecture = Architecture.from_dict(json.loads((work / "architecture.json").read_text()))
    tower = build_image_encoder(architecture)
    tower.load_state_dict(weights["image_encoder"])
    return tower.float().eval(), step


def embed(tower, processor, scenes: list) -> torch.Tensor:
    import torch

    from engine.builtin.drawing import render_scene

    chunks = []
    with torch.inference_mode():
        for start in range(0, len(scenes), 256):
            images = [render_scene(scene) for scene in scenes[start : start + 256]]
            pixels = processor(images=images, return_tensors="pt").pixel_values
            chunks.append(tower(pixel_values=pixels).image_embeds)
    return torch.cat(chunks)


def fit_probe(features: torch.Tensor, labels: list[str], train: int, seed: int):
    """A softmax regression fitted on the first `train` rows: (its accuracy on the other rows,
    a function naming the label of new features)."""
    import torch

    names = sorted(set(labels))
    target = torch.tensor([names.index(label) for label in labels])
    mean, std = features[:train].mean(0), features[:train].std(0) + 1e-6
    x = (features - mean) / std
    torch.manual_seed(seed)
    probe = torch.nn.Linear(x.shape[1], len(names))
    optimiser = torch.optim.LBFGS(probe.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        value = torch.nn.functional.cross_entropy(probe(x[:train]), target[:train])
        value = value + 1e-3 * probe.weight.square().sum()  # a little L2: the probe must generalise
        value.backward()
        return value

    optimiser.step(loss)

    @torch.no_grad()
    def read(new: torch.Tensor) -> list[str]:
        return [names[i] for i in probe((new.float() - mean) / std).argmax(1).tolist()]

    with torch.no_grad():
        accuracy = (probe(x[train:]).argmax(1) == target[train:]).float().mean().item()
    return accuracy, read


def prior_prompts(count: int, split: str, seed: int) -> list[tuple[str, dict[str, str]]]:
    """`count` one-object prompts naming colour, shape and background, with those labels: over
    the held-out triples ("heldout") or over training scenes ("train")."""
    import numpy as np

    from engine.builtin.captions import caption_single
    from engine.builtin.scenes import HELD_OUT_TRIPLES, sample_single, single_object_scene

    rng = np.random.default_rng(seed)
    triples = sorted(HELD_OUT_TRIPLES)
    prompts = []
    for i in range(count):
        if split == "heldout":
            colour, shape, background = triples[i % len(triples)]
            scene = single_object_scene(rng, colour, shape, background, "medium", "centre")
        else:
            scene = sample_single(rng, "train")
        prompt, _ = caption_single(
            rng, scene, name_background=True, name_colour=True, name_position=False, name_size=False
        )
        prompts.append(
            (
                prompt,
                {
                    "foreground_colour": scene.objects[0].colour,
                    "background_colour": scene.background,
                    "shape": scene.objects[0].shape,
                },
            )
        )
    return prompts


def prior_embeddings(model_dir: Path, prompts: list[str], seed: int) -> torch.Tensor:
    """One image embedding per prompt from the model's prior, at the sampling settings a worker
    resolves for a plain /imagine (the model's imagine.json defaults)."""
    import tempfile

    import torch

    from engine.render.factory import load_renderer
    from engine.render.types import RenderJob

    with tempfile.TemporaryDirectory() as data_dir:
        renderer = load_renderer(str(model_dir), Path(data_dir), device="cpu")
    settings = renderer.resolved_settings(RenderJob(0, "text2image", "", None, 0, 1, {}))
    pipe = renderer.pipe
    chunks = []
    for start in range(0, len(prompts), 64):
        batch = prompts[start : start + 64]
        generators = [torch.Generator().manual_seed(seed + start + i) for i in range(len(batch))]
        chunks.append(
            pipe.sample_prior(
                pipe.encode_text(batch),
                pipe.encode_text([""] * len(batch)),
                generators,
                num_inference_steps=int(settings["prior_steps"]),
                guidance_scale=float(settings["prior_guidance"]),
            )
        )
    return torch.cat(chunks)


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    from engine.builtin.scenes import sample_pair, sample_single

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path(__file__).resolve().parents[1] / "engine/builtin/weights")
    parser.add_argument("--work", type=Path, help="probe this training folder's CLIP checkpoint instead")
    parser.add_argument("--scenes", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--prior",
        type=int,
        default=0,
        metavar="N",
        help="also read the prior's embeddings for N held-out and N training prompts",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from transformers import CLIPImageProcessor

    from engine.builtin.models import Architecture, build_feature_extractor

    result: dict[str, Any] = {}
    if args.work:
        found = checkpoint_tower(args.work)
        if found is None:
            print(
                f"--work: no CLIP checkpoint in {args.work} (train one with `imagine-bot train-builtin "
                f"--stages clip --work {args.work}`)",
                file=sys.stderr,
            )
            return 2
        tower, result["step"] = found
        # The run's own input size (an `--image-tower` run's CLIP sees 64 px).
        processor = build_feature_extractor(
            Architecture.from_dict(json.loads((args.work / "architecture.json").read_text()))
        )
    else:
        tower = shipped_tower(args.model)
        processor = CLIPImageProcessor.from_pretrained(args.model / "feature_extractor")
    rng = np.random.default_rng(args.seed)
    scenes = [sample_single(rng, "train") for _ in range(args.scenes)]
    features = embed(tower, processor, scenes)
    train = int(0.8 * len(scenes))
    result["scenes"] = len(scenes)
    readers = {}
    for name, label_of in ATTRIBUTES.items():
        accuracy, readers[name] = fit_probe(features, [label_of(scene) for scene in scenes], train, args.seed)
        result[name] = round(accuracy, 4)
    pairs = [sample_pair(rng, "train") for _ in range(args.scenes)]
    pair_features = embed(tower, processor, pairs)
    result["pairs"] = {
        name: round(fit_probe(pair_features, [label_of(scene) for scene in pairs], train, args.seed)[0], 4)
        for name, label_of in PAIR_ATTRIBUTES.items()
    }
    if args.prior:
        # The same probes read the prior's predicted embeddings: what the prior tells the decoder
        # to draw, for prompts of held-out triples and of training scenes.
        for split in ("heldout", "train"):
            prompts = prior_prompts(args.prior, split, args.seed)
            predicted = prior_embeddings(args.model, [p for p, _ in prompts], args.seed)
            result[f"prior_{split}"] = {
                name: round(
                    float(
                        np.mean(
                            [
                                read == labels[name]
                                for read, (_, labels) in zip(readers[name](predicted), prompts, strict=True)
                            ]
                        )
                    ),
                    4,
                )
                for name in ("foreground_colour", "background_colour", "shape")
            }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
