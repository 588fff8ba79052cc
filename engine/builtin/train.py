"""Train the built-in unCLIP model from scratch on generated scenes, and export its weights.

Four stages, each resumable from its last checkpoint under `--work`:

1. clip      a small CLIP (text transformer + ViT), contrastive loss
2. prior     a PriorTransformer: CLIP text embedding → CLIP image embedding (predicts x0)
3. decoder   a UNet2DConditionModel at 32 px conditioned on the image embedding through
             UnCLIPTextProjModel, with learned-range variance; image embedding and text dropped
             at random so classifier-free guidance and text-free variations work
4. upsampler a UNet2DModel 32 → 64 px

Then the EMA weights are written in Karlo's folder layout (fp16 safetensors) to `--out`, which
`engine.render.loader` loads like any other unCLIP model. `--smoke` runs the same code at toy
sizes in about a minute.

Every batch is drawn from a numpy Generator seeded with (seed, stage, step), so a resumed run
sees the same data as an uninterrupted one. `--device cuda` trains the networks on a GPU while
`--workers` processes render the batches ahead on the CPU; the data and the recipe are the same,
only the float rounding differs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, replace
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:  # numpy, torch and the model libraries are imported where they are used
    import numpy as np
    import numpy.typing as npt
    import torch
    from torch.utils.data import DataLoader, Dataset
    from transformers import (
        CLIPTextModelWithProjection,
        CLIPVisionModelWithProjection,
        PreTrainedTokenizerBase,
    )

    from engine.builtin.captions import CaptionMeaning, Example
    from engine.builtin.scenes import Scene

log = logging.getLogger("engine.builtin.train")

ModuleT = TypeVar("ModuleT", bound="torch.nn.Module")

STAGES = ("clip", "prior", "ar_prior", "decoder", "upsampler")
DEFAULT_OUT = Path(__file__).resolve().parent / "weights"
DEFAULT_WORK = Path("data/builtin-train")

#: The sampling settings imagine.json ships (tuned with `bench/model_quality.py --set` on the
#: held-out prompts). The decoder needs guidance to follow its conditioning; trained with offset
#: noise it draws colours and shapes best at 8 (48 prompts: foreground 0.95, background 0.88,
#: shape 0.97; at 12: 0.88, 0.87, 0.93). The prior's guidance was 2 from its 1200-step days (at 4
#: it pushed embeddings towards combinations it had seen); the fine-tuned priors read prompts as
#: people type them better at 3 (their embeddings' shape 0.92 -> 0.94 for template prompts and
#: up 2-5 points in every held-out family, `bench/text_probe.py --prior 2`; at 1 all fell;
#: full set: 19 fewer missed images over the eight families), at the cost of a few two-object
#: images (model card, "And after the background").
#: The upsampler starts half-way from the bicubic upscale: from pure noise it washes the colours
#: out. Variations start from the source image (strength 0.4): the CLIP image embedding alone reads
#: shape poorly (crosses come back as diamonds or stars), so the source's own pixels have to carry
#: it (keep colour and shape: 0.6 → 0.725, 0.4 → 0.81 on the bench's 50 sources; 0.785 → 0.835 on
#: 50 others). `/vary strength:1` gives the paper's pure embedding variations. With the 64 px image
#: tower (`--image-tower`) the strength matters little (0.25 / 0.4 / 0.6 / 1.0: 0.875 / 0.833 /
#: 0.813 / 0.813 on the quick bench's 12 sources), so 0.4 stays.
SAMPLING_DEFAULTS = {
    "prior_steps": 25,
    "decoder_steps": 25,
    "super_res_steps": 10,
    "super_res_strength": 0.5,
    "prior_guidance": 3.0,
    "decoder_guidance": 8.0,
    "strength": 0.4,
}


PAIR_FRACTION = 0.25  # share of two-object scenes


@dataclass(frozen=True)
class StagePlan:
    steps: int
    batch: int
    lr: float
    warmup: int = 200
    ema_decay: float | None = 0.999
    checkpoint_every: int = 250
    log_every: int = 50
    cosine: bool = False  # decay the learning rate to 10% by the last step
    offset_noise_from: int | None = None  # decoder: the step from which its noise gets OFFSET_NOISE
    shape_emphasis_from: int | None = None  # clip: the step from which shape heads weigh SHAPE_EMPHASIS
    pair_fraction: float = PAIR_FRACTION  # share of two-object scenes in a batch
    # clip fine-tune: weight of holding template captions' hidden states and embeddings where the
    # base put them, so the prior and decoder trained on them still read them.
    anchor_weight: float = 10.0


PLANS: dict[str, dict[str, StagePlan]] = {
    "full": {
        # What the shipped weights were trained with (README's model card has each stage's wall
        # time on the CPU and on a GPU). The decoder can only draw what the CLIP image embedding
        # encodes, and shape is the slowest thing CLIP learns (bench/clip_probe.py: a linear probe
        # reads shape from 33 % of embeddings after 1200 steps, 82 % after 2400), hence 2400.
        # The ViT learns shapes on varied colours best near 5e-4 (1e-3 and 2e-3 learn them slower).
        "clip": StagePlan(steps=2400, batch=128, lr=5e-4, ema_decay=None, cosine=True),
        # The prior decides the background: decoding the true image embeddings of held-out
        # scenes drew every background right (240 of 240), the 1200-step prior's embeddings
        # 0.925 on saturated ones (cyan, pink, purple -> grey); 4800 steps drew them all right.
        "prior": StagePlan(steps=4800, batch=128, lr=3e-4, ema_decay=0.999),
        # As many steps as the diffusion prior, so bench/model_quality.py compares the two on equal terms.
        "ar_prior": StagePlan(steps=4800, batch=128, lr=3e-4, ema_decay=0.999),
        # The decoder learns shapes on plain noise, then spends its last 2000 steps on offset
        # noise, which teaches it to take the mean colour from the embedding (see OFFSET_NOISE).
        # Offset noise from the first step draws the colours as well but the shapes worse; 1000
        # offset steps kept variations' shapes less well than 2000 (README's model card).
        "decoder": StagePlan(steps=7000, batch=32, lr=3e-4, ema_decay=0.9995, offset_noise_from=5000),
        "upsampler": StagePlan(steps=1000, batch=16, lr=3e-4, ema_decay=0.999),
    },
    # `--base engine/builtin/weights --finetune`: the shipped model taught the phrasing recipe
    # (phrasings.py's families and noise, BPE-dropout) without retraining it whole. The text tower
    # learns the new wordings against the frozen image tower while template captions are held
    # where they were; the priors and the decoder then learn to read its new hidden states.
    # Held at weight 100 with lr 1e-4 for 1000 steps, the tower hardly changed how it binds a
    # colour to "background" ("blue background with a red star" read swapped 0.84 -> 0.80, strict
    # text_probe); held at 10 with lr 3e-4 for 1500 steps, background_first's swapped share went
    # 0.55 -> 0.32 and template captions still read 1.00 (model card, "The text tower let go").
    # Looser still, the shipped tower: held at 3 for 2000 steps, then at 1 for 1500 (each run
    # followed by the priors' re-tune), background_first read 0.92 / 0.92 and template captions
    # still 1.00 (model card, "Let go further"); this plan is that last run. Since then the shipped
    # prior was re-tuned once more (`--seed 7`), and this plan run again on top with half the
    # slipped words slipped twice (phrasings.SECOND_SLIP_SHARE), the priors re-tuned after it
    # (model card, "Two slips in a word"); then once more with a fifteenth training wording, the
    # background joined to the object by "and" (model card, "And after the background").
    "finetune": {
        "clip": StagePlan(steps=1500, batch=128, lr=3e-4, warmup=100, ema_decay=None, cosine=True, anchor_weight=1.0),
        "prior": StagePlan(steps=1500, batch=128, lr=2e-4, warmup=100, ema_decay=0.995),
        "ar_prior": StagePlan(steps=500, batch=128, lr=1e-4, warmup=100, ema_decay=0.995),
        "decoder": StagePlan(steps=400, batch=32, lr=5e-5, warmup=100, ema_decay=0.995, offset_noise_from=0),
    },
    # `--base engine/builtin/weights --finetune --image-tower`: a new CLIP image tower at 64 px
    # (8 px patches: the same 64 tokens as 4 px patches of 32 px, with four times the pixels in
    # each) trained against the base's frozen text tower, so the text side - and what the
    # priors read - stays as it is while the image embedding learns shape. Every later stage
    # starts from the base's weights and learns the new embedding. At 64 px alone the tower read
    # shape no better than the 32 px one (bench/clip_probe.py after 2400 steps: 0.77 against
    # 0.79); the shape heads' emphasis from step 2400 took it to 0.90 by 3600. (The shipped tower
    # ran the first 2400 steps as a plan of 2400, then was continued to this plan's 3600: its
    # learning rate jumped back from 5e-5 to 1.6e-4 at step 2400, which a fresh run of this plan
    # does not do.)
    "image_tower": {
        "clip": StagePlan(steps=3600, batch=128, lr=5e-4, ema_decay=None, cosine=True, shape_emphasis_from=2400),
        "prior": StagePlan(steps=1400, batch=128, lr=2e-4, warmup=100, ema_decay=0.995),
        "ar_prior": StagePlan(steps=1000, batch=128, lr=3e-4, warmup=100, ema_decay=0.995),
        "decoder": StagePlan(steps=2500, batch=32, lr=1e-4, warmup=100, ema_decay=0.999, offset_noise_from=0),
    },
    "smoke": {
        "clip": StagePlan(
            steps=30, batch=32, lr=1e-3, warmup=5, ema_decay=None, checkpoint_every=20, log_every=10, cosine=True
        ),
        "prior": StagePlan(steps=30, batch=32, lr=1e-3, warmup=5, ema_decay=0.9, checkpoint_every=20, log_every=10),
        "ar_prior": StagePlan(steps=30, batch=32, lr=1e-3, warmup=5, ema_decay=0.9, checkpoint_every=20, log_every=10),
        "decoder": StagePlan(
            steps=30, batch=8, lr=1e-3, warmup=5, ema_decay=0.9, checkpoint_every=20, log_every=10, offset_noise_from=20
        ),
        "upsampler": StagePlan(steps=20, batch=8, lr=1e-3, warmup=5, ema_decay=0.9, checkpoint_every=20, log_every=10),
    },
}


def with_plan_change(plans: dict[str, StagePlan], change: str) -> dict[str, StagePlan]:
    """`plans` with one field changed, from `--plan STAGE.FIELD=VALUE` (a recipe tried before it
    becomes a plan of its own). ValueError says what is wrong with `change`; `plans` is untouched."""
    target, sep, text = change.partition("=")
    stage, dot, name = target.partition(".")
    if not sep or not dot:
        raise ValueError(f"expected STAGE.FIELD=VALUE, got {change!r}")
    if stage not in plans:
        raise ValueError(f"{stage!r} is not a stage of this plan ({', '.join(plans)})")
    fields = {f.name: f for f in dataclass_fields(StagePlan)}
    if name not in fields:
        raise ValueError(f"{name!r} is not a plan field ({', '.join(fields)})")
    kind = str(fields[name].type)
    wanted = "true or false" if kind.startswith("bool") else "a whole number" if kind.startswith("int") else "a number"
    value: Any
    try:
        if text.lower() == "none" and "None" in kind:
            value = None
        elif kind.startswith("bool"):
            if text.lower() not in ("true", "false"):
                raise ValueError
            value = text.lower() == "true"
        elif kind.startswith("int"):
            value = int(text)
        else:
            value = float(text)
    except ValueError:
        raise ValueError(f"{target}: {text!r} is not {wanted}") from None
    if name == "pair_fraction" and not 0.0 <= value <= 1.0:
        raise ValueError(f"{target}: a share between 0 and 1, got {text}")
    if name in ("steps", "batch", "lr", "log_every", "checkpoint_every") and value <= 0:
        raise ValueError(f"{target}: must be above 0, got {text}")
    return {**plans, stage: replace(plans[stage], **{name: value})}


#: What `--finetune` tunes unless --stages says otherwise. Not the decoder: it reads the text
#: tower's hidden states too, but tuning it (400 steps) changed no phrasing family's score and cost
#: the template prompts foreground colour and binding (bench/model_quality.py --quick: 0.963 and
#: 0.344 with it, 1.000 and 0.406 without; the model card has the runs).
FINETUNE_STAGES = ("clip", "prior", "ar_prior")
#: `--image-tower`: the new tower changes every embedding, so the decoder must learn it too.
IMAGE_TOWER_STAGES = ("clip", "prior", "ar_prior", "decoder")
IMAGE_TOWER_SIZE = 64  # pixels the new image tower sees (8 px patches: 64 tokens, as before)
TEXT_DROPOUT = 0.5  # decoder: drop the caption half the time (unCLIP), so "" + embedding works
IMAGE_EMBED_DROPOUT = 0.1  # decoder: the unconditional branch of classifier-free guidance
PRIOR_TEXT_DROPOUT = 0.1  # prior: the unconditional branch of its guidance
SUBWORD_DROPOUT = 0.1  # every stage's captions: BPE merges skipped at this rate (SubwordDropout)
AR_PRIOR_COMPONENT = ("imagine", "AutoregressivePrior")  # model_index.json's line for it
# Offset noise (a per-image, per-channel constant of this standard deviation added to the
# decoder's training noise). Plain pixel noise leaves an image's mean colour readable almost to
# t = 1000, so the decoder rarely has to make the background colour from the embedding and, at
# sampling time, keeps whatever mean colour the first noisy steps happen to have.
OFFSET_NOISE = 0.1
# The CLIP stage's shape heads (one object's shape, each of two objects' shapes) weigh this much
# more than the other attribute heads from `shape_emphasis_from` on: a CLIP image embedding reads
# colours and positions almost perfectly within a few hundred steps but shape only slowly, and the
# decoder can only draw what the embedding carries (pure variations, two-object binding).
SHAPE_EMPHASIS = 4.0
SHAPE_HEADS = ("shape", "first_shape", "second_shape")


# --- batches -----------------------------------------------------------------------------------


def on(module: ModuleT, target: str | torch.dtype) -> ModuleT:
    """`module.to(target)`: a module's `to` moves it in place and returns it. Called through
    `nn.Module` because transformers and diffusers wrap their models' `to` in functools.wraps,
    which typeshed types as an unbound function (mypy would ask for `self` again)."""
    as_module: torch.nn.Module = module
    as_module.to(target)
    return module


def batch_rng(seed: int, stage: str, step: int) -> np.random.Generator:
    import numpy as np

    return np.random.default_rng([seed, STAGES.index(stage) if stage in STAGES else 99, step])


def torch_generator(seed: int, stage: str, step: int) -> torch.Generator:
    import torch

    return torch.Generator().manual_seed(int(batch_rng(seed, stage, step).integers(2**62)))


def clip_pixels(images: Sequence[np.ndarray] | np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 → (N, 3, size, size) in [-1, 1], resized as the CLIPImageProcessor does
    (Pillow bicubic), so training sees what `encode_images` sees."""
    import numpy as np
    import torch
    from PIL import Image

    resized = np.stack(
        [np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC)) for image in images]
    ).astype(np.float32)
    return torch.from_numpy(resized / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()


def to_tensor(images: npt.ArrayLike) -> torch.Tensor:
    """(N, H, W, 3) uint8 → (N, 3, H, W) float in [-1, 1]."""
    import numpy as np
    import torch

    return torch.from_numpy(np.asarray(images, dtype=np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()


def area_downsample(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """What the pipeline does to init images (`mode="area"`); exact box filter for 2×."""
    from torch.nn import functional as F

    return F.interpolate(pixels, size=(size, size), mode="area")


def tokenize(
    tokenizer: PreTrainedTokenizerBase, captions: list[str], rng: np.random.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded token ids and attention mask, as `ImagineUnCLIPPipeline.encode_text` makes them
    (CPU work: it runs in the data loader). With `rng`, words are split with BPE-dropout
    (`SubwordDropout`), as training captions are."""
    import torch

    if rng is None:
        inputs = tokenizer(
            captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        )
        return inputs.input_ids, inputs.attention_mask.bool()
    rows = [SubwordDropout.of(tokenizer).encode(caption, rng) for caption in captions]
    length = tokenizer.model_max_length
    ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = True
    return ids, mask


class SubwordDropout:
    """BPE-dropout (Provilkov et al., 2020) for the CLIP tokenizer: each merge is skipped with
    probability `SUBWORD_DROPOUT` while a training word is split, so the text tower also sees words
    in smaller pieces. A misspelt or unknown word at use time falls apart into such pieces; a
    tower trained only on whole-word tokens reads them as noise and loses the colour or the shape.

    Our own few lines rather than the `tokenizers` BPE's `dropout`, because that one draws from an
    unseeded generator and every training batch must be a function of (seed, stage, step).
    With dropout 0 it gives exactly the tokenizer's ids (tests/builtin/test_train_smoke.py)."""

    _built: dict[int, SubwordDropout] = {}

    def __init__(self, tokenizer: PreTrainedTokenizerBase, dropout: float) -> None:
        spec = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
        self.vocab: dict[str, int] = spec["vocab"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["merges"]]
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.suffix = spec["end_of_word_suffix"] or ""
        self.prefix = spec.get("continuing_subword_prefix") or ""  # a word-start tokenizer's mark
        self.backend = tokenizer.backend_tokenizer
        self.bos, self.eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.length = tokenizer.model_max_length
        self.dropout = dropout

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> SubwordDropout:
        """One per tokenizer (per data-loader process): reading the merges takes a while."""
        built = cls._built.get(id(tokenizer))
        if built is None:
            built = cls._built[id(tokenizer)] = cls(tokenizer, SUBWORD_DROPOUT)
        return built

    def split(self, word: str, rng: np.random.Generator | None) -> list[str]:
        """`word`'s BPE pieces, merging the best-ranked pair that survives dropout each time."""
        pieces = [word[0], *(self.prefix + letter for letter in word[1:])]
        pieces[-1] += self.suffix
        while len(pieces) > 1:
            candidates = sorted(
                (self.ranks[pair], i)
                for i, pair in enumerate(zip(pieces, pieces[1:], strict=False))
                if pair in self.ranks
            )
            kept = [c for c in candidates if rng is None or self.dropout <= 0 or rng.random() >= self.dropout]
            if not kept:
                break
            _, i = kept[0]
            pieces[i : i + 2] = [pieces[i] + pieces[i + 1].removeprefix(self.prefix)]
        return pieces

    def encode(self, caption: str, rng: np.random.Generator | None) -> list[int]:
        """Token ids with BOS and EOS, truncated like the tokenizer (EOS kept last)."""
        words = self.backend.pre_tokenizer.pre_tokenize_str(self.backend.normalizer.normalize_str(caption))
        ids = [self.vocab[piece] for word, _ in words for piece in self.split(word, rng)]
        return [self.bos, *ids[: self.length - 2], self.eos]


def embed_text(
    text_encoder: CLIPTextModelWithProjection, ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exactly `ImagineUnCLIPPipeline.encode_text`: no attention mask to the encoder."""
    output = text_encoder(ids)
    return output.text_embeds, output.last_hidden_state, mask


def encode_text(
    tokenizer: PreTrainedTokenizerBase, text_encoder: CLIPTextModelWithProjection, captions: list[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids, mask = tokenize(tokenizer, captions)
    device = text_encoder.device
    return embed_text(text_encoder, ids.to(device), mask.to(device))


def carried_token_table(
    old: PreTrainedTokenizerBase, new: PreTrainedTokenizerBase, table: torch.Tensor
) -> torch.Tensor:
    """The token-embedding table for `new`'s ids from `table` (for `old`'s): a token keeps the
    row of the same piece under `old` (a marked inner piece `##x`, the row of `x`, the only form
    `old` had), else the mean of the rows of the pieces `old` splits it into. The tuned tower
    then starts out reading every caption as the base did."""
    import torch

    old_vocab = old.get_vocab()
    old_split = SubwordDropout(old, 0.0)
    prefix = SubwordDropout(new, 0.0).prefix
    rows = torch.empty((len(new), table.shape[1]), dtype=table.dtype)
    for token, index in new.get_vocab().items():
        piece = token.removeprefix(prefix) if prefix else token
        if piece in old_vocab:
            rows[index] = table[old_vocab[piece]]
            continue
        whole = piece.endswith(old_split.suffix)
        pieces = old_split.split(piece.removesuffix(old_split.suffix) if whole else piece, None)
        inner = pieces[-1].removesuffix(old_split.suffix)
        if not whole and inner in old_vocab:  # an inner piece: its last part does not end a word
            pieces[-1] = inner
        rows[index] = table[[old_vocab[p] for p in pieces]].mean(0)
    return rows


#: Attribute heads of the CLIP stage's auxiliary loss, and how many values each has.
ATTRIBUTE_HEADS: dict[str, int] = {
    "background": 12,
    "count": 2,
    "colour": 12,
    "shape": 9,
    "size": 3,
    "position": 5,
    "first_colour": 12,
    "first_shape": 9,
    "second_colour": 12,
    "second_shape": 9,
    "arrangement": 2,
}
IGNORE = -100


def scene_labels(scene: Scene) -> dict[str, int]:
    """The generator's labels for a scene, per attribute head (IGNORE where not applicable)."""
    from engine.builtin.scenes import COLOUR_NAMES, POSITION_NAMES, SHAPES, SIZE_NAMES

    labels = dict.fromkeys(ATTRIBUTE_HEADS, IGNORE)
    labels["background"] = COLOUR_NAMES.index(scene.background)
    labels["count"] = len(scene.objects) - 1
    if len(scene.objects) == 1:
        (obj,) = scene.objects
        labels.update(
            colour=COLOUR_NAMES.index(obj.colour),
            shape=SHAPES.index(obj.shape),
            size=SIZE_NAMES.index(obj.size),
            position=POSITION_NAMES.index(obj.position),
        )
    else:
        first, second = scene.objects
        labels.update(
            first_colour=COLOUR_NAMES.index(first.colour),
            first_shape=SHAPES.index(first.shape),
            second_colour=COLOUR_NAMES.index(second.colour),
            second_shape=SHAPES.index(second.shape),
            arrangement=("horizontal", "vertical").index(scene.arrangement),
        )
    return labels


def meaning_labels(meaning: CaptionMeaning) -> dict[str, int]:
    """The labels a caption pins down: what it leaves unsaid is IGNORE."""
    from engine.builtin.scenes import COLOUR_NAMES, POSITION_NAMES, SHAPES, SIZE_NAMES

    def index(values: Sequence[str], value: str | None) -> int:
        return IGNORE if value is None else values.index(value)

    labels = dict.fromkeys(ATTRIBUTE_HEADS, IGNORE)
    labels["background"] = index(COLOUR_NAMES, meaning.background)
    labels["count"] = len(meaning.shapes) - 1
    if len(meaning.shapes) == 1:
        labels.update(
            colour=index(COLOUR_NAMES, meaning.colours[0]),
            shape=SHAPES.index(meaning.shapes[0]),
            size=index(SIZE_NAMES, meaning.size),
            position=index(POSITION_NAMES, meaning.position),
        )
    else:
        if meaning.ordered:
            labels.update(
                first_colour=index(COLOUR_NAMES, meaning.colours[0]),
                first_shape=SHAPES.index(meaning.shapes[0]),
                second_colour=index(COLOUR_NAMES, meaning.colours[1]),
                second_shape=SHAPES.index(meaning.shapes[1]),
            )
        if meaning.arrangement is not None:
            labels["arrangement"] = ("horizontal", "vertical").index(meaning.arrangement)
    return labels


def fits_matrix(examples: Sequence[Example]) -> torch.Tensor:
    """M[i, j] = caption i is a correct description of scene j."""
    import torch

    return torch.tensor([[e.meaning.fits(o.scene) for o in examples] for e in examples], dtype=torch.float32)


# --- checkpoints -------------------------------------------------------------------------------


def _save_atomic(obj: Any, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save(obj, temporary)
    os.replace(temporary, path)


def _load(path: Path) -> dict | None:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None


def latest_state(work: Path, stage: str) -> tuple[dict[str, dict], int] | None:
    """A stage's weights at its last checkpoint, finished or not, and that step (None: no
    checkpoint yet). For looking at a run while it trains (bench/clip_probe.py --work)."""
    checkpoint = _load(work / stage / "checkpoint.pt")
    return None if checkpoint is None else (checkpoint["weights"], checkpoint["step"])


def trained_state(work: Path, stage: str) -> dict[str, dict]:
    """The finished weights of a stage, module by module (its EMA where it keeps one)."""
    checkpoint = _load(work / stage / "checkpoint.pt")
    if checkpoint is None or not checkpoint["done"]:
        raise RuntimeError(f"stage {stage!r} has not finished in {work}: run it first (--stages {stage})")
    return checkpoint["weights"]


# --- stages ------------------------------------------------------------------------------------


class Stage(ABC):
    """One training stage: the modules it trains, one batch of data, and the loss of a batch.

    `batch` is CPU work only (rendering, tokenising, random draws) and a pure function of the
    step, so the data loader's worker processes can make batches ahead while `loss` runs the
    networks on `ctx.device`; a run gets the same data on any device and any worker count.
    """

    name = ""

    def __init__(self, ctx: TrainContext) -> None:
        self.ctx = ctx

    @abstractmethod
    def trainable(self) -> dict[str, torch.nn.Module]:
        """The modules this stage trains and checkpoints, by name."""

    @abstractmethod
    def batch(self, step: int, plan: StagePlan) -> dict[str, Any]:
        """The CPU tensors of step `step` of `plan` (a pure function of seed, stage, plan and step)."""

    @abstractmethod
    def loss(self, data: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one batch already on `ctx.device`, and metrics to log."""

    def prepare(self) -> None:  # noqa: B027 - an optional hook, not abstract: most stages need no preparation
        """Work done once before the first step (not repeated on resume)."""

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - an optional hook: only stages with extra state override it
        pass

    def autocast(self) -> AbstractContextManager[None]:
        """bf16 autocast for the UNets where the device computes bf16 natively; plain fp32 where
        it would only emulate it (`fast_bf16`)."""
        import contextlib

        import torch

        if not fast_bf16(self.ctx.device):
            return contextlib.nullcontext()
        return torch.autocast(torch.device(self.ctx.device).type, dtype=torch.bfloat16)


def fast_bf16(device: str) -> bool:
    """Does `device` compute bf16 natively? CUDA GPUs since Ampere do, and CPUs with AVX512-BF16
    or AMX, where bf16 autocast made the UNets 1.5-2.4x faster. A CPU without them (plain AVX512
    or AVX2) emulates bf16: measured on such a 2-core Xeon, a decoder step took 2.9 s with
    autocast and 1.07 s without, the upsampler 3.0 s and 1.9 s."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    # Private helpers (torch >= 2.1); a torch without them gets the safe answer, fp32.
    native = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in native if check is not None)


@dataclass
class TrainContext:
    arch: Any
    work: Path
    seed: int
    tokenizer: Any = None
    device: str = "cpu"
    #: An exported weights folder whose CLIP the later stages build on (`--base`), instead of
    #: this run's own clip stage: training one more part for a model that already ships.
    base: Path | None = None
    #: `--finetune`: every stage starts from the base's weights of its parts and trains on
    #: (the fine-tuned text tower and) the base's image tower.
    finetune: bool = False
    #: `--image-tower` (with `--finetune`): the clip stage trains a new image tower against the
    #: base's frozen text tower instead of tuning the text tower; later stages read that tower.
    image_tower: bool = False
    #: `--word-starts`: the base's own tokenizer, which `tokenizer` replaces. Its text tower (the
    #: anchor, and the start of the tuned one) reads this one's ids.
    base_tokenizer: Any = None

    def load_base_text_tower(self, module: CLIPTextModelWithProjection) -> None:
        """The base's text tower into `module`; with a new tokenizer, its token table carried over."""
        state = self.base_state("text_encoder")
        if self.base_tokenizer is not None:
            key = "text_model.embeddings.token_embedding.weight"
            state[key] = carried_token_table(self.base_tokenizer, self.tokenizer, state[key])
        module.load_state_dict(state)

    def load_base(self, module: torch.nn.Module, part: str) -> None:
        """Load the base folder's `part` (an exported subfolder) into `module`, as float32."""
        module.load_state_dict(self.base_state(part))

    def base_state(self, part: str) -> dict[str, torch.Tensor]:
        """The base folder's `part` (an exported subfolder holding one safetensors file) as float32."""
        from safetensors.torch import load_file

        assert self.base is not None
        (weights,) = sorted((self.base / part).glob("*.safetensors"))
        return {name: tensor.float() for name, tensor in load_file(weights).items()}

    def frozen_clip(self) -> tuple[CLIPTextModelWithProjection, CLIPVisionModelWithProjection]:
        """The trained CLIP towers, frozen, for the later stages."""
        from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection

        from engine.builtin.models import build_image_encoder, build_text_encoder

        if self.base is not None:
            if self.image_tower:  # this run's new tower; the base's is not read
                image_encoder = build_image_encoder(self.arch)
                image_encoder.load_state_dict(trained_state(self.work, "clip")["image_encoder"])
            else:
                image_encoder = CLIPVisionModelWithProjection.from_pretrained(self.base / "image_encoder")
            if self.base_tokenizer is not None:  # the new tokenizer's ids: only the tuned tower reads them
                text_encoder = build_text_encoder(self.arch, self.tokenizer)
            else:
                text_encoder = CLIPTextModelWithProjection.from_pretrained(self.base / "text_encoder")
            tuned = self.finetune and not self.image_tower and (self.work / "clip" / "checkpoint.pt").exists()
            if tuned or self.base_tokenizer is not None:  # (main checks the new tokenizer's tower exists)
                text_encoder.load_state_dict(trained_state(self.work, "clip")["text_encoder"])
        else:
            weights = trained_state(self.work, "clip")
            text_encoder = build_text_encoder(self.arch, self.tokenizer)
            image_encoder = build_image_encoder(self.arch)
            text_encoder.load_state_dict(weights["text_encoder"])
            image_encoder.load_state_dict(weights["image_encoder"])
        for model in (text_encoder, image_encoder):
            on(model, self.device).eval().requires_grad_(False)
        return text_encoder, image_encoder


class ClipStage(Stage):
    """Contrastive text-image training where every caption that fits a scene counts as a match.

    Plus two auxiliary losses from the generator's labels, because the decoder can only draw
    what the image embedding encodes and contrastive learning alone picks up colours in minutes
    but shapes and positions only slowly (a 500-step pilot: colour 0.97, shape 0.21, position
    0.24 zero-shot):

    - linear heads shared by both towers read every attribute (colour, shape, size, position,
      ...) off the normalised embeddings;
    - a per-patch head predicts which pixels of each ViT patch belong to an object. With a dozen
      foreground and background colours, a linear patch embedding must first learn colour-free
      edges; telling it where the edges are speeds up shape learning.
    """

    name = "clip"
    IMAGE_ATTRIBUTE_WEIGHT = 1.0
    TEXT_ATTRIBUTE_WEIGHT = 0.5
    MASK_WEIGHT = 1.0
    AUX_SCALE = 10.0  # logits = AUX_SCALE * head(normalised embedding)
    MAX_LOGIT_SCALE = 4.6052  # log(100), CLIP's clamp
    FINETUNE_LOGIT_SCALE = 20.0  # the base's towers: contrastive loss 1.50 at 20, 1.50 at 10, 5.2 at 100

    def __init__(self, ctx: TrainContext) -> None:
        import math

        import torch

        from engine.builtin.models import build_image_encoder, build_text_encoder

        super().__init__(ctx)
        self.text_encoder = on(build_text_encoder(ctx.arch, ctx.tokenizer), ctx.device)
        self.image_encoder = on(build_image_encoder(ctx.arch), ctx.device)
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07), device=ctx.device))
        self.heads = torch.nn.ModuleDict(
            {name: torch.nn.Linear(ctx.arch.embed_dim, size) for name, size in ATTRIBUTE_HEADS.items()}
        )
        self.heads["patch_mask"] = torch.nn.Linear(ctx.arch.vision_width, ctx.arch.vision_patch**2)
        self.heads.to(ctx.device)
        #: Fine-tuning: the base's text tower, frozen, which the template captions are held to.
        self.anchor: CLIPTextModelWithProjection | None = None
        if ctx.image_tower:
            # The base's text tower, frozen, is the target the new image tower learns to meet:
            # what the priors read stays as it is. The loss is the full recipe's (contrastive,
            # attribute heads, patch masks), the heads fitted afresh to the frozen text side.
            ctx.load_base(self.text_encoder, "text_encoder")
            self.text_encoder.eval().requires_grad_(False)
        elif ctx.finetune:
            ctx.load_base_text_tower(self.text_encoder)
            ctx.load_base(self.image_encoder, "image_encoder")
            # The image tower stays as it is: the prior's targets and the decoder's conditioning.
            self.image_encoder.requires_grad_(False)
            self.anchor = on(build_text_encoder(ctx.arch, ctx.base_tokenizer or ctx.tokenizer), ctx.device)
            ctx.load_base(self.anchor, "text_encoder")
            self.anchor.eval().requires_grad_(False)
            # The base's scale is not exported; its towers separate a batch best at about 20.
            self.logit_scale.data.fill_(math.log(self.FINETUNE_LOGIT_SCALE))

    def trainable(self) -> dict[str, torch.nn.Module]:
        return {"text_encoder": self.text_encoder, "image_encoder": self.image_encoder}

    def extra_parameters(self) -> list[torch.nn.Parameter]:
        return [self.logit_scale, *self.heads.parameters()]

    def extra_state(self) -> dict[str, Any]:
        return {"logit_scale": self.logit_scale.detach().clone(), "heads": self.heads.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.logit_scale.data.copy_(state["logit_scale"])
        self.heads.load_state_dict(state["heads"])

    @staticmethod
    def label_tensors(labels: list[dict[str, int]]) -> dict[str, torch.Tensor]:
        """{head: (N,) long tensor} from per-example label dicts."""
        import torch

        return {name: torch.tensor([row[name] for row in labels]) for name in ATTRIBUTE_HEADS}

    def attribute_loss(
        self, embeds: torch.Tensor, targets: dict[str, torch.Tensor], shape_weight: float = 1.0
    ) -> torch.Tensor:
        """Mean cross-entropy of the heads that have labels in this batch, the shape heads'
        times `shape_weight`."""
        import torch
        from torch.nn import functional as F

        losses = []
        for name, head in self.heads.items():
            if name not in ATTRIBUTE_HEADS:
                continue
            target = targets[name]
            if (target != IGNORE).any():
                loss = F.cross_entropy(self.AUX_SCALE * head(embeds), target, ignore_index=IGNORE)
                losses.append(loss * shape_weight if name in SHAPE_HEADS else loss)
        return torch.stack(losses).mean()

    def patch_masks(self, scenes: Sequence[Scene]) -> torch.Tensor:
        """(N, patches, patch²) object coverage of every pixel of every ViT patch, in [0, 1]."""
        import numpy as np
        import torch

        from engine.builtin.drawing import object_mask

        size, patch = self.ctx.arch.clip_size, self.ctx.arch.vision_patch
        masks = np.zeros((len(scenes), size, size), dtype=np.float32)
        for i, scene in enumerate(scenes):
            for obj in scene.objects:
                masks[i] = np.maximum(masks[i], np.asarray(object_mask(obj, size), dtype=np.float32) / 255)
        grid = size // patch
        return (
            torch.from_numpy(masks)
            .reshape(len(scenes), grid, patch, grid, patch)
            .permute(0, 1, 3, 2, 4)
            .reshape(len(scenes), grid * grid, patch * patch)
        )

    def batch(self, step: int, plan: StagePlan) -> dict[str, Any]:
        import torch

        from engine.builtin.captions import caption_scene, sample_contrastive_batch
        from engine.builtin.drawing import render_batch
        from engine.builtin.phrasings import training_caption

        size = plan.batch
        rng = batch_rng(self.ctx.seed, self.name, step)
        examples = sample_contrastive_batch(rng, size, pair_fraction=plan.pair_fraction, caption=training_caption)
        scenes = [e.scene for e in examples]
        pixels = clip_pixels(render_batch(scenes, self.ctx.arch.image_size), self.ctx.arch.clip_size)
        # A little pixel noise, so decoded (slightly noisy) images embed like clean ones.
        generator = torch_generator(self.ctx.seed, self.name, step)
        sigma = torch.rand(size, 1, 1, 1, generator=generator) * 0.06
        pixels = pixels + sigma * torch.randn(pixels.shape, generator=generator)
        ids, mask = tokenize(self.ctx.tokenizer, [e.caption for e in examples], rng)
        batch = {
            "pixels": pixels,
            "ids": ids,
            "mask": mask,
            "patch_masks": self.patch_masks(scenes),
            "fits": fits_matrix(examples),
            "image_labels": self.label_tensors([scene_labels(scene) for scene in scenes]),
            "text_labels": self.label_tensors([meaning_labels(e.meaning) for e in examples]),
            "shape_weight": torch.tensor(
                SHAPE_EMPHASIS if plan.shape_emphasis_from is not None and step >= plan.shape_emphasis_from else 1.0
            ),
        }
        if self.anchor is not None:
            # The same scenes in the template grammar, whole words: what the anchor holds still
            # (the anchor reads them with the base's tokenizer, where a new one replaces it).
            templates = [caption_scene(rng, scene)[0] for scene in scenes]
            batch["anchor_ids"], mask = tokenize(self.ctx.tokenizer, templates)
            batch["base_anchor_ids"], base_mask = tokenize(self.ctx.base_tokenizer or self.ctx.tokenizer, templates)
            # Hidden states are compared position by position only where both give as many tokens.
            batch["anchor_aligned"] = (base_mask == mask).all(1)
            batch["anchor_weight"] = plan.anchor_weight
        return batch

    def loss(self, data: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        import torch
        from torch.nn import functional as F

        text_embeds, _, _ = embed_text(self.text_encoder, data["ids"], data["mask"])
        vision = self.image_encoder(pixel_values=data["pixels"])
        image_embeds = vision.image_embeds
        mask_logits = self.heads["patch_mask"](vision.last_hidden_state[:, 1:])
        mask_loss = F.binary_cross_entropy_with_logits(mask_logits, data["patch_masks"])
        text_embeds = F.normalize(text_embeds, dim=-1)
        image_embeds = F.normalize(image_embeds, dim=-1)
        logits = self.logit_scale.clamp(max=self.MAX_LOGIT_SCALE).exp() * text_embeds @ image_embeds.T
        fits = data["fits"]
        contrastive = 0.5 * (
            F.cross_entropy(logits, fits / fits.sum(1, keepdim=True))
            + F.cross_entropy(logits.T, fits.T / fits.T.sum(1, keepdim=True))
        )
        with torch.no_grad():
            rows = torch.arange(len(fits), device=fits.device)
            text_to_image = fits[rows, logits.argmax(1)].mean().item()
            image_to_text = fits[logits.argmax(0), rows].mean().item()
        if self.anchor is not None:
            # Fine-tuning the text tower alone: the image side's heads have nothing to learn, and
            # fresh text heads would pull the embeddings away from where the prior expects them.
            anchor = self.anchor_loss(data["anchor_ids"], data["base_anchor_ids"], data["anchor_aligned"])
            return contrastive + data["anchor_weight"] * anchor, {
                "contrastive": contrastive.item(),
                "anchor": anchor.item(),
                "t2i": text_to_image,
                "i2t": image_to_text,
            }
        shape_weight = float(data["shape_weight"])
        attributes = self.IMAGE_ATTRIBUTE_WEIGHT * self.attribute_loss(
            image_embeds, data["image_labels"], shape_weight
        ) + self.TEXT_ATTRIBUTE_WEIGHT * self.attribute_loss(text_embeds, data["text_labels"], shape_weight)
        return contrastive + attributes + self.MASK_WEIGHT * mask_loss, {
            "contrastive": contrastive.item(),
            "attributes": attributes.item(),
            "mask": mask_loss.item(),
            "t2i": text_to_image,
            "i2t": image_to_text,
            "scale": self.logit_scale.exp().item(),
        }

    def anchor_loss(self, ids: torch.Tensor, base_ids: torch.Tensor, aligned: torch.Tensor) -> torch.Tensor:
        """How far the tuned tower moved template captions: hidden states (of the captions whose
        tokens line up with the base tokenizer's: all of them unless `--word-starts`) and
        embeddings."""
        import torch
        from torch.nn import functional as F

        assert self.anchor is not None
        with torch.no_grad():
            target = self.anchor(base_ids)
        output = self.text_encoder(ids)
        loss = F.mse_loss(output.text_embeds, target.text_embeds)
        if aligned.any():
            loss = loss + F.mse_loss(output.last_hidden_state[aligned], target.last_hidden_state[aligned])
        return loss


def sampled_image_embeddings(
    ctx: TrainContext, image_encoder: CLIPVisionModelWithProjection, label: str, chunks: int = 8
) -> torch.Tensor:
    """CLIP image embeddings of `chunks` × 512 fresh training scenes, drawn from (seed, label):
    the data statistics the priors need (the diffusion prior's mean and spread, the AR prior's
    PCA basis and buckets)."""
    import torch

    from engine.builtin.captions import sample_examples
    from engine.builtin.drawing import render_batch
    from engine.builtin.phrasings import training_caption

    found: list[torch.Tensor] = []
    with torch.no_grad():
        for chunk in range(chunks):
            rng = batch_rng(ctx.seed, label, chunk)
            examples = sample_examples(rng, 512, pair_fraction=PAIR_FRACTION, caption=training_caption)
            pixels = clip_pixels(render_batch([e.scene for e in examples], ctx.arch.image_size), ctx.arch.clip_size)
            found.append(image_encoder(pixel_values=pixels.to(ctx.device)).image_embeds)
    return torch.cat(found)


def prior_batch(
    ctx: TrainContext, rng: np.random.Generator, size: int, pair_fraction: float = PAIR_FRACTION
) -> dict[str, Any]:
    """What both priors train on: captions (dropped PRIOR_TEXT_DROPOUT of the time, for
    guidance) as token ids and mask, and their scenes' pixels for the frozen CLIP image tower."""
    from engine.builtin.captions import sample_examples
    from engine.builtin.drawing import render_batch
    from engine.builtin.phrasings import training_caption

    examples = sample_examples(rng, size, pair_fraction=pair_fraction, caption=training_caption)
    captions = [e.caption if rng.random() >= PRIOR_TEXT_DROPOUT else "" for e in examples]
    ids, mask = tokenize(ctx.tokenizer, captions, rng)
    pixels = clip_pixels(render_batch([e.scene for e in examples], ctx.arch.image_size), ctx.arch.clip_size)
    return {"ids": ids, "mask": mask, "pixels": pixels}


class PriorStage(Stage):
    """x0-predicting diffusion prior over the CLIP image embedding, normalised by its statistics."""

    name = "prior"

    def __init__(self, ctx: TrainContext) -> None:
        from engine.builtin.diffusion import NoiseSchedule
        from engine.builtin.models import build_prior

        super().__init__(ctx)
        self.text_encoder, self.image_encoder = ctx.frozen_clip()
        self.prior = on(build_prior(ctx.arch), ctx.device)
        # clip_mean/clip_std are data statistics, not learned: set in prepare(), kept frozen.
        self.prior.clip_mean.requires_grad_(False)
        self.prior.clip_std.requires_grad_(False)
        self.schedule = NoiseSchedule().to(ctx.device)
        if ctx.finetune:
            ctx.load_base(self.prior, "prior")  # its statistics too: the image tower is the base's

    def trainable(self) -> dict[str, torch.nn.Module]:
        return {"prior": self.prior}

    def prepare(self) -> None:
        if self.ctx.finetune and not self.ctx.image_tower:
            return
        # A new image tower (`--image-tower`) has embeddings of its own spread: the base prior's
        # weights are a start, its statistics are not.
        embeds = sampled_image_embeddings(self.ctx, self.image_encoder, "prior-stats")
        self.prior.clip_mean.data.copy_(embeds.mean(0, keepdim=True))
        self.prior.clip_std.data.copy_(embeds.std(0, keepdim=True))
        log.info(
            "prior: image embedding mean norm %.3f, mean std %.3f",
            embeds.norm(dim=1).mean().item(),
            embeds.std(0).mean().item(),
        )

    def batch(self, step: int, plan: StagePlan) -> dict[str, Any]:
        import torch

        size = plan.batch
        data = prior_batch(self.ctx, batch_rng(self.ctx.seed, self.name, step), size, plan.pair_fraction)
        generator = torch_generator(self.ctx.seed, self.name, step)
        t = self.schedule.sample_timesteps(size, generator)
        noise = torch.randn(size, self.ctx.arch.embed_dim, generator=generator)
        return {**data, "t": t, "noise": noise}

    def loss(self, data: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        import torch
        from torch.nn import functional as F

        with torch.no_grad():
            text_embeds, hidden, mask = embed_text(self.text_encoder, data["ids"], data["mask"])
            image_embeds = self.image_encoder(pixel_values=data["pixels"]).image_embeds
        x0 = (image_embeds - self.prior.clip_mean) / self.prior.clip_std
        t = data["t"]
        x_t = self.schedule.add_noise(x0, data["noise"], t)
        predicted = self.prior(
            x_t, timestep=t, proj_embedding=text_embeds, encoder_hidden_states=hidden, attention_mask=mask
        ).predicted_image_embedding
        loss = F.mse_loss(predicted, x0)
        with torch.no_grad():
            cosine = (
                F.cosine_similarity(predicted * self.prior.clip_std + self.prior.clip_mean, image_embeds).mean().item()
            )
        return loss, {"cos": cosine}


class ArPriorStage(Stage):
    """The paper's other prior: the image embedding's quantised PCA coordinates, token by token
    (engine.render.ar_prior). Trained on the same captions and the same frozen CLIP as the
    diffusion prior, so bench/model_quality.py compares the two on equal terms."""

    name = "ar_prior"

    def __init__(self, ctx: TrainContext) -> None:
        from engine.builtin.models import build_ar_prior

        super().__init__(ctx)
        self.text_encoder, self.image_encoder = ctx.frozen_clip()
        self.model = on(build_ar_prior(ctx.arch), ctx.device)
        # The codebook is data, not learned: fitted here (deterministically, also on resume) rather
        # than in prepare(), so the EMA starts from it instead of averaging it in from zeros.
        explained = self.model.fit_codebook(sampled_image_embeddings(ctx, self.image_encoder, "ar-prior-codebook"))
        log.info(
            "ar_prior: %d PCA directions keep %.1f%% of the image embeddings' variance, %d buckets each",
            ctx.arch.ar_components,
            100 * explained,
            ctx.arch.ar_bins,
        )
        if ctx.finetune:
            # The same codebook where the image tower is the base's; a new one keeps its own.
            codebook = {"pca_mean", "pca_basis", "bin_edges", "bin_centres"} if ctx.image_tower else set()
            fitted = {name: buffer.clone() for name, buffer in self.model.named_buffers() if name in codebook}
            ctx.load_base(self.model, "ar_prior")
            for name, buffer in fitted.items():
                self.model.get_buffer(name).copy_(buffer)

    def trainable(self) -> dict[str, torch.nn.Module]:
        return {"ar_prior": self.model}

    def batch(self, step: int, plan: StagePlan) -> dict[str, Any]:
        return prior_batch(self.ctx, batch_rng(self.ctx.seed, self.name, step), plan.batch, plan.pair_fraction)

    def loss(self, data: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        import torch

        with torch.no_grad():
            text_embeds, hidden, mask = embed_text(self.text_encoder, data["ids"], data["mask"])
            image_embeds = self.image_encoder(pixel_values=data["pixels"]).image_embeds
        loss, accuracy = self.model.loss(image_embeds, text_embeds, hidden, mask)
        return loss, {"acc": accuracy.item()}


class DecoderStage(Stage):
    """unCLIP's decoder: noise + learned variance, conditioned on image embedding and caption."""

    name = "decoder"

    def __init__(self, ctx: TrainContext) -> None:
        import torch

        from engine.builtin.diffusion import NoiseSchedule
        from engine.builtin.models import build_decoder, build_text_proj

        super().__init__(ctx)
        self.text_encoder, self.image_encoder = ctx.frozen_clip()
        self.text_proj = on(build_text_proj(ctx.arch), ctx.device)
        self.decoder = on(build_decoder(ctx.arch), ctx.device)
        self.schedule = NoiseSchedule().to(ctx.device)
        with torch.no_grad():
            self.empty = encode_text(ctx.tokenizer, self.text_encoder, [""])
        if ctx.finetune:
            ctx.load_base(self.text_proj, "text_proj")
            ctx.load_base(self.decoder, "decoder")

    def trainable(self) -> dict[str, torch.nn.Module]:
        return {"text_proj": self.text_proj, "decoder": self.decoder}

    def batch(self, step: int, plan: StagePlan) -> dict[str, Any]:
        import torch

        from engine.builtin.captions import sample_examples
        from engine.builtin.drawing import render_batch
        from engine.builtin.phrasings import training_caption

        size = plan.batch
        arch = self.ctx.arch
        rng = batch_rng(self.ctx.seed, self.name, step)
        generator = torch_generator(self.ctx.seed, self.name, step)
        examples = sample_examples(rng, size, pair_fraction=plan.pair_fraction, caption=training_caption)
        images = render_batch([e.scene for e in examples], arch.image_size)
        drop_text = torch.from_numpy(rng.random(size) < TEXT_DROPOUT)
        drop_image = torch.from_numpy(rng.random(size) < IMAGE_EMBED_DROPOUT)
        ids, mask = tokenize(self.ctx.tokenizer, [e.caption for e in examples], rng)
        x0 = area_downsample(to_tensor(images), arch.decoder_size)
        t = self.schedule.sample_timesteps(size, generator)
        noise = torch.randn(x0.shape, generator=generator)
        if plan.offset_noise_from is not None and step >= plan.offset_noise_from:
            # Its own generator: every other draw of the step stays what it is without offset.
            offsets = torch.randn(size, 3, 1, 1, generator=torch_generator(self.ctx.seed, "offset", step))
            noise = noise + OFFSET_NOISE * offsets
        return {
            "ids": ids,
            "mask": mask,
            "clip_pixels": clip_pixels(images, arch.clip_size),
            "drop_text": drop_text,
            "drop_image": drop_image,
            "x0": x0,
            "t": t,
            "noise": noise,
        }

    def loss(self, data: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        import torch
        from torch.nn import functional as F

        drop_text, drop_image = data["drop_text"], data["drop_image"]
        with torch.no_grad():
            text_embeds, hidden, mask = embed_text(self.text_encoder, data["ids"], data["mask"])
            empty_embeds, empty_hidden, empty_mask = self.empty
            text_embeds = torch.where(drop_text[:, None], empty_embeds, text_embeds)
            hidden = torch.where(drop_text[:, None, None], empty_hidden, hidden)
            mask = torch.where(drop_text[:, None], empty_mask, mask)
            image_embeds = self.image_encoder(pixel_values=data["clip_pixels"]).image_embeds
        # The unconditional image embedding is the one the pipeline substitutes for guidance.
        null = self.text_proj.learned_classifier_free_guidance_embeddings[None].expand_as(image_embeds)
        image_embeds = torch.where(drop_image[:, None], null, image_embeds)

        x0, t, noise = data["x0"], data["t"], data["noise"]
        x_t = self.schedule.add_noise(x0, noise, t)
        with self.autocast():
            states, time_embeds = self.text_proj(
                image_embeddings=image_embeds,
                prompt_embeds=text_embeds,
                text_encoder_hidden_states=hidden,
                do_classifier_free_guidance=False,
            )
            full_mask = F.pad(mask, (self.text_proj.config["clip_extra_context_tokens"], 0), value=True)
            output = self.decoder(
                x_t, t, encoder_hidden_states=states, class_labels=time_embeds, attention_mask=full_mask
            ).sample
        noise_pred, variance_pred = output.float().split(3, dim=1)
        mse = ((noise_pred - noise) ** 2).flatten(1).mean(1)
        vb = self.schedule.variance_bound(x_t, x0, t, noise_pred, variance_pred)
        loss = (self.schedule.min_snr_weight(t) * mse).mean() + vb.mean()
        return loss, {"mse": mse.mean().item(), "vb": vb.mean().item()}


class UpsamplerStage(Stage):
    """32 → 64 px super-resolution on degraded low-res inputs (decoder outputs are not clean)."""

    name = "upsampler"

    def __init__(self, ctx: TrainContext) -> None:
        from engine.builtin.diffusion import NoiseSchedule
        from engine.builtin.models import build_upsampler

        super().__init__(ctx)
        self.upsampler = on(build_upsampler(ctx.arch), ctx.device)
        self.schedule = NoiseSchedule().to(ctx.device)

    def trainable(self) -> dict[str, torch.nn.Module]:
        return {"super_res": self.upsampler}

    def batch(self, step: int, plan: StagePlan) -> dict[str, Any]:
        import torch
        from torch.nn import functional as F

        from engine.builtin.captions import sample_examples
        from engine.builtin.drawing import render_batch
        from engine.builtin.phrasings import training_caption

        size = plan.batch
        arch = self.ctx.arch
        rng = batch_rng(self.ctx.seed, self.name, step)
        generator = torch_generator(self.ctx.seed, self.name, step)
        examples = sample_examples(rng, size, pair_fraction=plan.pair_fraction, caption=training_caption)
        x0 = to_tensor(render_batch([e.scene for e in examples], arch.image_size))
        small = area_downsample(x0, arch.decoder_size)
        # Degrade the low-res input a little (blur, noise), as unCLIP does for its upsamplers.
        blurred = F.avg_pool2d(F.pad(small, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        amount = torch.rand(size, 1, 1, 1, generator=generator) * 0.5
        small = small + amount * (blurred - small)
        small = small + torch.rand(size, 1, 1, 1, generator=generator) * 0.04 * torch.randn(
            small.shape, generator=generator
        )
        small = small.clamp(-1, 1)
        upscaled = F.interpolate(
            small, size=(arch.image_size, arch.image_size), mode="bicubic", align_corners=False, antialias=True
        )
        t = self.schedule.sample_timesteps(size, generator)
        noise = torch.randn(x0.shape, generator=generator)
        return {"x0": x0, "upscaled": upscaled, "t": t, "noise": noise}

    def loss(self, data: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        import torch

        x0, t, noise = data["x0"], data["t"], data["noise"]
        x_t = self.schedule.add_noise(x0, noise, t)
        with self.autocast():
            noise_pred = self.upsampler(torch.cat([x_t, data["upscaled"]], dim=1), t).sample
        mse = ((noise_pred.float() - noise) ** 2).flatten(1).mean(1)
        loss = (self.schedule.min_snr_weight(t) * mse).mean()
        return loss, {"mse": mse.mean().item()}


STAGE_CLASSES: dict[str, type[Stage]] = {
    "clip": ClipStage,
    "prior": PriorStage,
    "ar_prior": ArPriorStage,
    "decoder": DecoderStage,
    "upsampler": UpsamplerStage,
}


# --- the training loop -------------------------------------------------------------------------


class StepBatches:
    """Batch i of a run that starts at `start`: what the data loader's workers make ahead."""

    def __init__(self, stage: Stage, plan: StagePlan, start: int) -> None:
        self.stage, self.plan, self.start = stage, plan, start

    def __len__(self) -> int:
        return self.plan.steps - self.start

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.stage.batch(self.start + index, self.plan)


def _one_thread(_worker: int) -> None:
    import torch

    torch.set_num_threads(1)


def to_device(data: Any, device: str) -> Any:
    """Tensors of a batch (nested in dicts) onto `device`."""
    if isinstance(data, dict):
        return {key: to_device(value, device) for key, value in data.items()}
    return data.to(device, non_blocking=True) if hasattr(data, "to") else data


def batches(stage: Stage, plan: StagePlan, start: int, workers: int) -> DataLoader[dict[str, Any]]:
    """The batches of steps start.. in order, made by `workers` processes (0: in this one)."""
    from torch.utils.data import DataLoader

    return DataLoader(
        # A map-style dataset by protocol (len and getitem), not a Dataset subclass.
        cast("Dataset[dict[str, Any]]", StepBatches(stage, plan, start)),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        worker_init_fn=_one_thread if workers else None,
        prefetch_factor=8 if workers else None,
        pin_memory=stage.ctx.device.startswith("cuda"),
    )


def run_stage(stage: Stage, plan: StagePlan, workers: int = 0) -> dict[str, Any]:
    """Train `stage` to `plan.steps`, resuming from its checkpoint; say how it was trained: total
    wall time, steps, batch, and the device and data workers of its last session."""
    import math

    import torch
    from tqdm import tqdm

    from engine.builtin.diffusion import EMA

    path = stage.ctx.work / stage.name / "checkpoint.pt"
    checkpoint = _load(path)
    modules = stage.trainable()
    if checkpoint is not None and checkpoint["step"] >= plan.steps and checkpoint["done"]:
        log.info(
            "%s: already trained (%d steps, %.0f s); skipping", stage.name, checkpoint["step"], checkpoint["elapsed"]
        )
        return stage_summary(checkpoint)

    parameters = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    parameters += getattr(stage, "extra_parameters", list)()
    optimizer = torch.optim.AdamW(parameters, lr=plan.lr, weight_decay=0.01, betas=(0.9, 0.99))
    ema = EMA(modules, plan.ema_decay) if plan.ema_decay else None
    start, elapsed = 0, 0.0
    if checkpoint is not None:
        for name, module in modules.items():
            module.load_state_dict(checkpoint["modules"][name])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if ema is not None:
            ema.load_state_dict(checkpoint["ema"])
        stage.load_extra_state(checkpoint["extra"])
        start, elapsed = checkpoint["step"], checkpoint["elapsed"]
        log.info("%s: resuming at step %d of %d (%.0f s so far)", stage.name, start, plan.steps, elapsed)
    else:
        log.info(
            "%s: %s trainable parameters, %d steps of batch %d",
            stage.name,
            f"{sum(p.numel() for p in parameters):,}",
            plan.steps,
            plan.batch,
        )
        began = time.perf_counter()
        stage.prepare()
        elapsed += time.perf_counter() - began

    def learning_rate(step: int) -> float:
        rate = plan.lr * min(1.0, (step + 1) / plan.warmup)
        if plan.cosine:
            rate *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / plan.steps))
        return rate

    def save(step: int, done: bool) -> dict:
        weights = {name: (ema.module_state(name) if ema else module.state_dict()) for name, module in modules.items()}
        checkpoint = {
            "step": step,
            "elapsed": elapsed,
            "done": done,
            "plan": asdict(plan),
            "modules": {name: module.state_dict() for name, module in modules.items()},
            "optimizer": optimizer.state_dict(),
            "ema": ema.state_dict() if ema else None,
            "extra": stage.extra_state(),
            "weights": weights,
            "device": stage.ctx.device,
            "workers": workers,
        }
        _save_atomic(checkpoint, path)
        return checkpoint

    for module in modules.values():
        module.train()
    interactive = sys.stderr.isatty()
    bar = tqdm(
        total=plan.steps,
        initial=start,
        desc=stage.name,
        unit="step",
        dynamic_ncols=True,
        mininterval=1 if interactive else 30,
        file=sys.stderr,
    )
    running: dict[str, float] = {}
    elapsed_before = elapsed
    last = time.perf_counter()
    for step, data in enumerate(batches(stage, plan, start, workers), start):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step)
        loss, metrics = stage.loss(to_device(data, stage.ctx.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        if ema is not None:
            ema.update(modules, step)
        now = time.perf_counter()
        elapsed += now - last
        last = now
        for key, value in {"loss": loss.item(), **metrics}.items():
            running[key] = running.get(key, 0.0) + value
        bar.update(1)
        if (step + 1) % plan.log_every == 0 or step + 1 == plan.steps:
            count = (step % plan.log_every) + 1
            summary = " ".join(f"{k}={v / count:.4f}" for k, v in running.items())
            bar.set_postfix_str(summary, refresh=False)
            log.info(
                "%s step %d/%d %s lr=%.2e (%.0f s, %.2f s/step)",
                stage.name,
                step + 1,
                plan.steps,
                summary,
                learning_rate(step),
                elapsed,
                (elapsed - elapsed_before) / (step + 1 - start),
            )
            running = {}
        if (step + 1) % plan.checkpoint_every == 0 and step + 1 < plan.steps:
            save(step + 1, done=False)
    bar.close()
    finished = save(plan.steps, done=True)
    log.info("%s: finished %d steps in %.0f s of wall time", stage.name, plan.steps, elapsed)
    return stage_summary(finished)


def stage_summary(checkpoint: dict) -> dict[str, Any]:
    """How a finished stage was trained, for times.json and imagine.json."""
    return {
        "seconds": round(checkpoint["elapsed"]),
        "steps": checkpoint["step"],
        "batch": checkpoint["plan"]["batch"],
        "lr": checkpoint["plan"]["lr"],
        "pair_fraction": checkpoint["plan"].get("pair_fraction", PAIR_FRACTION),
        "device": checkpoint.get("device", "cpu"),
        "workers": checkpoint.get("workers", 0),
    }


# --- export ------------------------------------------------------------------------------------


def save_part(out: Path, name: str, part: Any, library: str) -> None:
    """Write one component of the weights folder, in the dtype its loader expects."""
    import shutil

    import torch
    from diffusers.models.modeling_utils import ModelMixin

    if (out / name).exists():
        shutil.rmtree(out / name)
    if name == "ar_prior":
        # float32: its bucket table and PCA basis are data, and it is small (~3 MB).
        part.save_pretrained(out / name, safe_serialization=True)
    elif isinstance(part, ModelMixin) and library != "transformers":
        # fp16 halves the size; diffusers loads it back as float32 unless told otherwise.
        on(part, torch.float16).save_pretrained(out / name, safe_serialization=True)
    else:
        # The CLIP towers stay float32: they are small, and transformers would otherwise load
        # them as float16 next to float32 diffusers parts when no dtype is given.
        part.save_pretrained(out / name)


def export_weights(ctx: TrainContext, out: Path, *, description: str, training: dict) -> Path:
    """Write the trained stack in Karlo's layout (fp16 safetensors) with model_index.json."""
    import shutil

    from diffusers.schedulers.scheduling_unclip import UnCLIPScheduler

    from engine.builtin import models
    from engine.render.tiny import scheduler_configs, write_model_index

    arch = ctx.arch
    clip = trained_state(ctx.work, "clip")
    parts: dict[str, tuple[Any, tuple[str, str]]] = {}
    text_encoder = models.build_text_encoder(arch, ctx.tokenizer)
    text_encoder.load_state_dict(clip["text_encoder"])
    image_encoder = models.build_image_encoder(arch)
    image_encoder.load_state_dict(clip["image_encoder"])
    prior = models.build_prior(arch)
    prior.load_state_dict(trained_state(ctx.work, "prior")["prior"])
    ar_prior = models.build_ar_prior(arch)
    ar_prior.load_state_dict(trained_state(ctx.work, "ar_prior")["ar_prior"])
    decoder_weights = trained_state(ctx.work, "decoder")
    text_proj = models.build_text_proj(arch)
    text_proj.load_state_dict(decoder_weights["text_proj"])
    decoder = models.build_decoder(arch)
    decoder.load_state_dict(decoder_weights["decoder"])
    upsampler = models.build_upsampler(arch)
    upsampler.load_state_dict(trained_state(ctx.work, "upsampler")["super_res"])
    parts = {
        "tokenizer": (ctx.tokenizer, ("transformers", "CLIPTokenizer")),
        "text_encoder": (text_encoder, ("transformers", "CLIPTextModelWithProjection")),
        "image_encoder": (image_encoder, ("transformers", "CLIPVisionModelWithProjection")),
        "feature_extractor": (models.build_feature_extractor(arch), ("transformers", "CLIPImageProcessor")),
        "prior": (prior, ("diffusers", "PriorTransformer")),
        "ar_prior": (ar_prior, AR_PRIOR_COMPONENT),
        "text_proj": (text_proj, ("unclip", "UnCLIPTextProjModel")),
        "decoder": (decoder, ("diffusers", "UNet2DConditionModel")),
        # One upsampler for every step: the loader reuses it as super_res_last.
        "super_res_first": (upsampler, ("diffusers", "UNet2DModel")),
    }
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name, (part, (library, _)) in parts.items():
        save_part(out, name, part, library)
    for name, config in scheduler_configs().items():
        UnCLIPScheduler(**config).save_pretrained(out / name)
    components = {name: lib_cls for name, (_, lib_cls) in parts.items()}
    components.update({name: ("diffusers", "UnCLIPScheduler") for name in scheduler_configs()})
    write_model_index(
        out,
        components,
        {
            "name": "builtin",
            "description": description,
            "trained": True,
            "defaults": dict(SAMPLING_DEFAULTS),
            "training": training,
            "architecture": arch.to_dict(),
        },
    )
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log.info("exported to %s (%.1f MB)", out, size / 1e6)
    return out


#: What each kind of tuning run teaches, for its record in imagine.json.
TUNING_RECIPES = {
    "finetune": "phrasing families (fifteen), noise words, letter slips in several words (half of them twice), "
    "word dropout, BPE-dropout; image tower frozen",
    "image_tower": "CLIP image tower at {clip_size} px against the frozen text tower; priors and decoder tuned to it",
}


def record_tuning(
    training: dict[str, Any],
    kind: str,
    ctx: TrainContext,
    times: dict[str, dict[str, Any]],
    plan_changes: Sequence[str],
) -> None:
    """Append this run to `training["tunings"]`, the tuning runs in the order they were made, so
    a model tuned twice keeps both records. Earlier exports kept one record per kind under its
    own key ("finetune", "image_tower", made in that order); those move into the list first."""
    tunings = training.setdefault("tunings", [])
    earlier = [{"kind": key, **training.pop(key)} for key in ("finetune", "image_tower") if key in training]
    tunings[:0] = earlier
    record = {
        "kind": kind,
        "recipe": TUNING_RECIPES[kind].format(clip_size=ctx.arch.clip_size),
        "plan_changes": list(plan_changes),
        "stages": times,
        "seconds": sum(stage["seconds"] for stage in times.values()),
    }
    if ctx.base_tokenizer is not None:
        record["tokenizer"] = f"new: word starts marked, {len(ctx.tokenizer)} tokens (was {len(ctx.base_tokenizer)})"
    tunings.append(record)


def export_onto_base(
    ctx: TrainContext, out: Path, times: dict[str, dict[str, Any]], plan_changes: Sequence[str] = ()
) -> Path:
    """Write the base folder with this run's stages in place of its parts to `out` (a copy of the
    base, or the base itself). `--finetune` records its stages apart from the base's training,
    after the tunings the base already had (`record_tuning`); an AR prior added to a base that had
    none is recorded as one of its stages."""
    import shutil

    from engine.builtin import models

    assert ctx.base is not None
    if out.resolve() != ctx.base.resolve():
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(ctx.base, out)
    index = json.loads((out / "model_index.json").read_text())
    written = list(times)
    if ctx.base_tokenizer is not None:
        # A new tokenizer: it and the text tower that reads it go together, whichever stages ran.
        shutil.rmtree(out / "tokenizer")
        ctx.tokenizer.save_pretrained(out / "tokenizer")
        index["tokenizer"] = ["transformers", "PreTrainedTokenizerFast"]
        if "clip" not in written:
            written.insert(0, "clip")
    for stage in written:
        weights = trained_state(ctx.work, stage)
        if stage == "clip" and ctx.image_tower:
            image_encoder = models.build_image_encoder(ctx.arch)
            image_encoder.load_state_dict(weights["image_encoder"])
            save_part(out, "image_encoder", image_encoder, "transformers")
            save_part(out, "feature_extractor", models.build_feature_extractor(ctx.arch), "transformers")
        elif stage == "clip":
            text_encoder = models.build_text_encoder(ctx.arch, ctx.tokenizer)
            text_encoder.load_state_dict(weights["text_encoder"])
            save_part(out, "text_encoder", text_encoder, "transformers")
        elif stage == "prior":
            prior = models.build_prior(ctx.arch)
            prior.load_state_dict(weights["prior"])
            save_part(out, "prior", prior, "diffusers")
        elif stage == "ar_prior":
            ar_prior = models.build_ar_prior(ctx.arch)
            ar_prior.load_state_dict(weights["ar_prior"])
            save_part(out, "ar_prior", ar_prior, AR_PRIOR_COMPONENT[0])
            index["ar_prior"] = list(AR_PRIOR_COMPONENT)
        elif stage == "decoder":
            text_proj = models.build_text_proj(ctx.arch)
            text_proj.load_state_dict(weights["text_proj"])
            save_part(out, "text_proj", text_proj, "unclip")
            decoder = models.build_decoder(ctx.arch)
            decoder.load_state_dict(weights["decoder"])
            save_part(out, "decoder", decoder, "diffusers")
        else:
            raise ValueError(f"--base: stage {stage!r} cannot be written onto an exported model")
    (out / "model_index.json").write_text(json.dumps(dict(sorted(index.items())), indent=2) + "\n")
    meta = json.loads((out / "imagine.json").read_text())
    meta["architecture"] = ctx.arch.to_dict()
    training = meta.setdefault("training", {})
    if ctx.finetune:
        record_tuning(training, "image_tower" if ctx.image_tower else "finetune", ctx, times, plan_changes)
    else:
        training.setdefault("stages", {}).update(times)
    training["total_seconds"] = sum(stage["seconds"] for stage in training.get("stages", {}).values()) + sum(
        tuning["seconds"] for tuning in training.get("tunings", [])
    )
    (out / "imagine.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info("wrote %s onto %s", ", ".join(times), out)
    return out


# --- entry point -------------------------------------------------------------------------------


def _tokenizer(ctx: TrainContext, folder: Path, word_starts: bool = False) -> PreTrainedTokenizerBase:
    """Build the tokenizer once per work folder (from seeded captions) and reuse it after."""
    from transformers import AutoTokenizer

    from engine.builtin.captions import sample_examples
    from engine.builtin.phrasings import training_caption
    from engine.render.tokenizer import build_clip_tokenizer, check_tokenizer

    # transformers 5 saves only tokenizer.json (older releases also wrote vocab.json). Reusing it
    # matters: a rebuild from the same captions numbers some equal-count tokens differently
    # under another `tokenizers` release, and the trained CLIP would then read the wrong ids.
    tokenizer: PreTrainedTokenizerBase
    if (folder / "tokenizer.json").exists() or (folder / "vocab.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(folder)
    else:
        rng = batch_rng(ctx.seed, "tokenizer", 0)
        corpus = [e.caption for e in sample_examples(rng, 20000, pair_fraction=0.3, caption=training_caption)]
        tokenizer = build_clip_tokenizer(
            corpus, vocab_size=ctx.arch.vocab_size, max_length=ctx.arch.max_tokens, word_starts=word_starts
        )
        tokenizer.save_pretrained(folder)
    check_tokenizer(tokenizer, folder)
    return tokenizer


def _setup_logging(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    file_handler = logging.FileHandler(work / "train.log")
    file_handler.setFormatter(formatter)
    stream_handler = logging.StreamHandler(sys.stdout)
    stream_handler.setFormatter(formatter)
    log.handlers[:] = [file_handler, stream_handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="imagine-bot train-builtin",
        description="Train the built-in unCLIP model on generated shapes and export its weights.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="weights folder to write")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="checkpoints and log")
    parser.add_argument("--smoke", action="store_true", help="toy sizes, about a minute")
    parser.add_argument(
        "--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)} (default: all)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--steps",
        action="append",
        default=[],
        metavar="STAGE=N",
        help="train STAGE to N steps instead of the plan (continues a finished stage)",
    )
    parser.add_argument(
        "--plan",
        action="append",
        default=[],
        metavar="STAGE.FIELD=VALUE",
        help="change one field of a stage's plan, e.g. decoder.lr=1e-4 or decoder.pair_fraction=0.5",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    parser.add_argument(
        "--device",
        default="cpu",
        help="where the networks train: cpu (default) or cuda[:N]; the data is made on the CPU",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes making batches ahead (default: none on the CPU, all cores but two on a GPU)",
    )
    parser.add_argument(
        "--base",
        type=Path,
        default=None,
        help="an exported weights folder to build on: train only --stages ar_prior on its CLIP and add "
        "the result to --out (default: the base folder itself)",
    )
    parser.add_argument(
        "--finetune",
        action="store_true",
        help="with --base: start the stages (clip, prior, ar_prior by default; decoder if named) from the "
        "base's weights and train them with the fine-tuning plan; clip tunes the text tower only",
    )
    parser.add_argument(
        "--image-tower",
        action="store_true",
        help=f"with --finetune: clip trains a new image tower at {IMAGE_TOWER_SIZE} px against the base's frozen "
        "text tower, and prior, ar_prior and decoder (all four by default) learn its embedding",
    )
    parser.add_argument(
        "--word-starts",
        action="store_true",
        help="with --finetune: replace the base's tokenizer by one that marks where words start (built from "
        "training captions into --work/tokenizer; the text tower's token table is carried over piece by piece); "
        "give it to every run on that --work",
    )
    parser.add_argument("--no-export", action="store_true", help="train only, do not write --out")
    return parser.parse_args(argv)


def device_available(name: str) -> bool:
    """`cpu`, or a CUDA device that this process can see."""
    import torch

    if name == "cpu":
        return True
    try:
        device = torch.device(name)
    except RuntimeError:
        return False
    return device.type == "cuda" and torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()


def main(argv: list[str] | None = None) -> int:
    """Train (or resume) the selected stages, then export the weights folder."""
    args = parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        print(f"--stages: unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}", file=sys.stderr)
        return 2
    if args.image_tower and not args.finetune:
        print("--image-tower: goes with --finetune --base WEIGHTS", file=sys.stderr)
        return 2
    if args.word_starts and (not args.finetune or args.image_tower):
        print("--word-starts: goes with --finetune --base WEIGHTS (and not --image-tower)", file=sys.stderr)
        return 2
    if args.word_starts and "clip" not in stages and not (args.work / "clip" / "checkpoint.pt").exists():
        print(
            f"--word-starts: no text tower for the new tokenizer in {args.work}: train --stages clip first",
            file=sys.stderr,
        )
        return 2
    if args.finetune:
        if args.base is None:
            print("--finetune: name the weights to start from with --base", file=sys.stderr)
            return 2
        if args.stages == ",".join(STAGES):
            stages = list(IMAGE_TOWER_STAGES if args.image_tower else FINETUNE_STAGES)
        refused = [s for s in stages if s not in PLANS["finetune"]]
        if refused:
            print(f"--finetune: stage(s) {', '.join(refused)} do not read text; nothing to tune", file=sys.stderr)
            return 2
    mode = "image_tower" if args.image_tower else "finetune" if args.finetune else "smoke" if args.smoke else "full"
    plans = dict(PLANS[mode])
    if args.finetune and args.smoke:
        plans = {name: replace(plan, steps=4, batch=8, warmup=2, checkpoint_every=2) for name, plan in plans.items()}
    for item in args.steps:
        name, _, count = item.partition("=")
        if name not in plans or not count.isdigit():
            print(f"--steps: expected STAGE=N with STAGE in {', '.join(STAGES)}, got {item!r}", file=sys.stderr)
            return 2
        plans[name] = replace(plans[name], steps=int(count))
    for item in args.plan:
        try:
            plans = with_plan_change(plans, item)
        except ValueError as error:
            print(f"--plan: {error}", file=sys.stderr)
            return 2

    from engine.render.loader import set_offline

    set_offline()
    import torch

    from engine.builtin.models import Architecture
    from engine.render.tiny import transformers_logging_quiet

    transformers_logging_quiet()
    if not device_available(args.device):
        print(f"--device {args.device}: not available here (cpu, or cuda[:N] for a visible GPU)", file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 0:
        print(f"--workers {args.workers}: must be 0 (make batches in this process) or more", file=sys.stderr)
        return 2
    if args.device.startswith("cuda"):
        # Small convolutions and matrices: let cuDNN pick kernels, and TF32 where fp32 remains.
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cores = os.cpu_count() or 1
    workers = args.workers if args.workers is not None else (0 if args.device == "cpu" else max(1, cores - 2))
    torch.set_num_threads(args.threads or cores)
    work = args.work
    _setup_logging(work)
    arch_file = work / "architecture.json"
    arch = Architecture.smoke() if args.smoke else Architecture.full()
    if args.base is not None:
        if stages != ["ar_prior"] and not args.finetune:
            print("--base: only --stages ar_prior trains on an exported model's CLIP", file=sys.stderr)
            return 2
        try:
            shipped = json.loads((args.base / "imagine.json").read_text())["architecture"]
        except (OSError, KeyError, ValueError) as error:
            print(f"--base {args.base}: not an exported built-in model ({error})", file=sys.stderr)
            return 2
        # The base's own sizes, with this version's defaults for parts it does not have yet.
        arch = Architecture.from_dict(shipped)
        if args.image_tower:
            arch = replace(arch, clip_size=IMAGE_TOWER_SIZE, vision_patch=IMAGE_TOWER_SIZE // 8)
    if arch_file.exists() and Architecture.from_dict(json.loads(arch_file.read_text())) != arch:
        print(f"{work} holds a {'full' if args.smoke else 'smoke'} run: use another --work", file=sys.stderr)
        return 2
    arch_file.write_text(json.dumps(arch.to_dict(), indent=2) + "\n")
    torch.manual_seed(args.seed)
    ctx = TrainContext(
        arch=arch,
        work=work,
        seed=args.seed,
        device=args.device,
        base=args.base,
        finetune=args.finetune,
        image_tower=args.image_tower,
    )
    if args.base is not None:
        from transformers import AutoTokenizer

        ctx.tokenizer = AutoTokenizer.from_pretrained(args.base / "tokenizer")
        if args.word_starts:
            ctx.base_tokenizer, ctx.tokenizer = ctx.tokenizer, _tokenizer(ctx, work / "tokenizer", word_starts=True)
    else:
        ctx.tokenizer = _tokenizer(ctx, work / "tokenizer")
    log.info(
        "training %s (%s mode, seed %d) in %s on %s with %d threads, %d data workers; UNets in %s",
        ", ".join(stages),
        mode,
        args.seed,
        work,
        args.device,
        torch.get_num_threads(),
        workers,
        "bf16 autocast" if fast_bf16(args.device) else "fp32 (no native bf16 here)",
    )

    times_file = work / "times.json"
    times = json.loads(times_file.read_text()) if times_file.exists() else {}
    for name in stages:
        # Modules are built with the seed fixed per stage, so a stage trained alone starts the same.
        torch.manual_seed(args.seed * 1000 + STAGES.index(name))
        stage = STAGE_CLASSES[name](ctx)
        times[name] = run_stage(stage, plans[name], workers)
        times_file.write_text(json.dumps(times, indent=2) + "\n")
        del stage

    if args.no_export:
        return 0
    if args.base is not None:
        export_onto_base(
            ctx, args.out if args.out != DEFAULT_OUT else args.base, {s: times[s] for s in stages}, args.plan
        )
        return 0
    missing = [s for s in STAGES if not (work / s / "checkpoint.pt").exists()]
    if missing:
        log.info("not exporting: stage(s) %s not trained yet", ", ".join(missing))
        return 0
    total = sum(v["seconds"] for v in times.values())
    export_weights(
        ctx,
        args.out,
        description=(
            "imagine-bot's own small unCLIP model, trained from scratch on generated "
            "coloured shapes (64 px)" + (" - SMOKE RUN, not a usable model" if args.smoke else "")
        ),
        training={
            "mode": mode,
            "seed": args.seed,
            "stages": times,
            "total_seconds": total,
            "torch_threads": torch.get_num_threads(),
        },
    )
    log.info("stage wall times: %s (total %.0f s)", ", ".join(f"{k} {v['seconds']} s" for k, v in times.items()), total)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
