"""How does the built-in CLIP's text tower read prompts as people type them? Zero-shot retrieval.

`bench/model_quality.py` renders each held-out phrasing family through the whole stack (prior,
decoder, upsampler), which takes minutes. This asks the text tower alone, in seconds: every one
colour × shape × background is drawn once (a medium object in the centre; 1188 images) and
embedded by the vision tower; each family phrases a prompt for each of the 95 held-out triples,
and the prompt's text embedding picks its nearest image. A family scores, per attribute, the share
of prompts whose nearest image has the asked colour, background or shape. The template wording
("a red star on a blue background") is the first row, for comparison.

    python bench/text_probe.py [--model engine/builtin/weights]
    python bench/text_probe.py --work data/finetune     # a run's latest CLIP checkpoint (its own tokenizer, if any)

Prints {"model": ..., "step": N or null, "gallery": ..., "families": {family: {"foreground_colour",
"background_colour", "shape", "colours_swapped"}}, "wordings": {family: {template: {...}}},
"shape_word_slipped": {kind: shape}}: "wordings" scores each sentence template of the held-out
families that have several (`phrasings.HELD_OUT_WORDINGS`) on its own, every held-out triple said
in it, since a family's loss is often one wording's (the "and" in "a blue background and a red
star on it"; the "red" that ends the tokens of "coloured"). "shape_word_slipped" asks in the
template wording with only the shape's word slipped, one kind of slip at a time ("none", and the
held-out typos family's "double", "drop", "swap"), and scores the shape — which slips the tower
cannot read past. The prior and the decoder read the tower's hidden states too, so the stack can
lose what the tower's embedding got right, or mend part of what it got wrong (the weights shipped
before 2026-12-07's looser fine-tune: the tower read 0.44 of the background-first prompts'
backgrounds right, the prior's embeddings 0.72).

    python bench/text_probe.py --prior 2 [--model DIR]    # + the diffusion prior, about 4 minutes

With --prior K the model's diffusion prior also turns each prompt into K image embeddings (its
shipped sampling settings, seeded), each picks its nearest image the same way, and
"prior_families" ("prior_wordings" per template) says what the prior's embeddings hold: where
the text tower reads a family and the prior does not, the prior loses it; where both do and the
stack's drawings (model_quality.py) do not, the decoder does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def text_tower(model_dir: Path, work: Path | None):
    """The model's text tower (a training folder's latest CLIP checkpoint in its place with
    `work`) and that checkpoint's step."""
    from transformers import CLIPTextModelWithProjection

    from engine.builtin.train import latest_state

    tower = CLIPTextModelWithProjection.from_pretrained(model_dir / "text_encoder").float().eval()
    if work is None:
        return tower, None
    state = latest_state(work, "clip")
    if state is None:
        raise SystemExit(f"--work {work}: no CLIP checkpoint there")
    weights, step = state
    # A run with its own tokenizer (`--word-starts`) has a token table of another size.
    rows = weights["text_encoder"]["text_model.embeddings.token_embedding.weight"].shape[0]
    tower.resize_token_embeddings(rows, mean_resizing=False)  # every row is overwritten just below
    tower.load_state_dict(weights["text_encoder"])
    return tower, step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path(__file__).resolve().parents[1] / "engine/builtin/weights")
    parser.add_argument("--work", type=Path, help="read this training folder's latest CLIP text tower instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prior", type=int, default=0, metavar="K", help="also K prior samples per prompt")
    parser.add_argument(
        "--gallery",
        choices=("all", "held-out"),
        default="all",
        help="images a prompt picks from: every colour x shape x background (default), or only the "
        "95 held-out triples (lenient: a misread prompt can only land on another held-out triple; "
        "the numbers before 2026-12-07 were measured so)",
    )
    args = parser.parse_args(argv)
    if args.prior and args.work:
        parser.error("--prior reads the model's own text tower and prior: it cannot be used with --work")

    import numpy as np
    import torch
    from transformers import AutoTokenizer, CLIPImageProcessor

    from bench.clip_probe import embed, prior_embeddings, shipped_tower
    from engine.builtin.phrasings import (
        HELD_OUT_FAMILIES,
        HELD_OUT_WORDINGS,
        TYPO_KINDS,
        Subject,
        phrase,
        phrase_in,
        typo_of_kind,
    )
    from engine.builtin.scenes import HELD_OUT_TRIPLES, all_triples, single_object_scene
    from engine.builtin.train import tokenize

    torch.set_num_threads(args.threads)
    # A training folder's own tokenizer where it has one (`train-builtin --word-starts`).
    own = args.work / "tokenizer" if args.work is not None and (args.work / "tokenizer").is_dir() else None
    tokenizer = AutoTokenizer.from_pretrained(own or args.model / "tokenizer")
    processor = CLIPImageProcessor.from_pretrained(args.model / "feature_extractor")
    text, step = text_tower(args.model, args.work)
    triples = sorted(HELD_OUT_TRIPLES)
    rng = np.random.default_rng(args.seed)
    # Every colour x shape x background, not only the held-out triples: a prompt read with its
    # colours swapped must be able to land on the swapped scene, which is seldom held out.
    gallery = triples if args.gallery == "held-out" else all_triples()
    scenes = [single_object_scene(rng, c, s, b, size="medium", position="centre") for c, s, b in gallery]
    images = torch.nn.functional.normalize(embed(shipped_tower(args.model), processor, scenes), dim=-1)

    def template(rng: np.random.Generator, colour: str, shape: str, background: str) -> str:
        return f"a {colour} {shape} on a {background} background"

    def scores(embeddings: torch.Tensor, asked: list[tuple[str, str, str]]) -> dict[str, float]:
        """Per attribute, the share of embeddings whose nearest image has what was asked; and the
        share whose nearest image has the object's and the background's colours swapped."""
        nearest = (torch.nn.functional.normalize(embeddings.float(), dim=-1) @ images.T).argmax(1).tolist()
        found = [(asked[i], gallery[j]) for i, j in enumerate(nearest)]
        result = {
            name: round(float(np.mean([picked[k] == wanted[k] for wanted, picked in found])), 3)
            for name, k in (("foreground_colour", 0), ("background_colour", 2), ("shape", 1))  # (colour, shape, bg)
        }
        swapped = [picked[0] == wanted[2] and picked[2] == wanted[0] for wanted, picked in found]
        return {**result, "colours_swapped": round(float(np.mean(swapped)), 3)}

    prompts = {
        family: [
            template(rng, c, s, b) if family == "template" else phrase(family, Subject(c, s, b), rng)
            for c, s, b in triples
        ]
        for family in ["template", *HELD_OUT_FAMILIES]
    }
    # A family's loss is often one wording's: each template of the families that have several
    # says every held-out triple, so each is scored on as many prompts as a whole family (their
    # own generator, so the other sections draw the prompts they drew before this one existed).
    wording_rng = np.random.default_rng([args.seed, 1])
    worded = {
        (family, wording): [phrase_in(wording, Subject(c, s, b), wording_rng) for c, s, b in triples]
        for family, templates in HELD_OUT_WORDINGS.items()
        for wording in templates
    }

    def read(texts: list[str], asked: list[tuple[str, str, str]] = triples) -> dict[str, float]:
        """The text tower's scores for `texts`, each asking for its entry of `asked`."""
        ids, _ = tokenize(tokenizer, texts)
        with torch.inference_mode():
            return scores(text(ids).text_embeds, asked)

    families = {family: read(texts) for family, texts in prompts.items()}
    wordings: dict[str, dict[str, dict[str, float]]] = {}
    for (family, wording), texts in worded.items():
        wordings.setdefault(family, {})[wording] = read(texts)
    # The typos family slips every long word; here only the shape's word slips, one kind at a time
    # (four draws of the slipped letter per triple), so what the tower loses to each kind shows.
    slipped_shapes: dict[str, float] = {}
    for kind in ("none", *TYPO_KINDS):
        asked, texts = [], []
        for _ in range(4):
            for c, s, b in triples:
                word = s if kind == "none" else typo_of_kind(s, kind, int(rng.integers(1, len(s) - 1)))
                asked.append((c, s, b))
                texts.append(template(rng, c, word, b))
        slipped_shapes[kind] = read(texts, asked)["shape"]
    result: dict = {
        "model": str(args.model),
        "step": step,
        "gallery": args.gallery,
        "families": families,
        "wordings": wordings,
        "shape_word_slipped": slipped_shapes,
    }
    if args.prior:
        # One prior run for every family's and wording's prompts, each prompt K times (each sample
        # its own seed).
        groups = [*prompts.values(), *worded.values()]
        asked = [p for texts in groups for p in texts * args.prior]
        embeddings = prior_embeddings(args.model, asked, args.seed).split(len(triples) * args.prior)
        read_by_prior = [scores(chunk, triples * args.prior) for chunk in embeddings]
        result["prior_families"] = dict(zip(prompts, read_by_prior[: len(prompts)], strict=True))
        prior_wordings: dict[str, dict[str, dict[str, float]]] = {}
        for (family, wording), read_ in zip(worded, read_by_prior[len(prompts) :], strict=True):
            prior_wordings.setdefault(family, {})[wording] = read_
        result["prior_wordings"] = prior_wordings
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
