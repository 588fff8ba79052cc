"""Captions for the built-in model's scenes: the grammar, and what each caption means.

A caption is drawn from a scene with a numpy Generator (`caption_single`, `caption_pair`): the
words for each attribute, a few sentence templates, and which attributes to name at all. A
caption also carries what it *means* (`CaptionMeaning`): which attributes it names. Contrastive
training uses that to know which images a caption fits (a caption that names no position fits
the shape anywhere), instead of assuming each caption fits only its own image.

`sample_examples` and `sample_contrastive_batch` pair scenes (engine/builtin/scenes.py) with
captions: the training data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.builtin.scenes import Scene, perturb, sample_pair, sample_single

# --- words -------------------------------------------------------------------------------------

#: The words each attribute is named with; a word listed twice is drawn twice as often.
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "red", "crimson", "scarlet"),
    "orange": ("orange",),
    "yellow": ("yellow",),
    "green": ("green",),
    "blue": ("blue",),
    "purple": ("purple", "purple", "violet"),
    "pink": ("pink",),
    "brown": ("brown",),
    "black": ("black",),
    "white": ("white",),
    "grey": ("grey", "gray"),
    "cyan": ("cyan", "cyan", "turquoise"),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "circle", "disc"),
    "square": ("square",),
    "triangle": ("triangle",),
    "star": ("star",),
    "heart": ("heart",),
    "ring": ("ring", "ring", "donut", "hoop"),
    "cross": ("cross", "cross", "plus sign"),
    "diamond": ("diamond", "diamond", "rhombus"),
    "crescent": ("crescent", "moon", "crescent moon"),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "small", "tiny", "little"),
    "medium": ("medium", "medium-sized"),
    "large": ("big", "large", "large", "huge"),
}
POSITION_WORDS: dict[str, tuple[str, ...]] = {
    "centre": ("in the centre", "in the center", "in the middle"),
    "left": ("on the left", "on the left side", "to the left"),
    "right": ("on the right", "on the right side", "to the right"),
    "top": ("at the top", "near the top", "in the upper part"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part"),
}
BACKGROUND_PHRASES = (
    "on {a_bg} background",
    "on {a_bg} background",
    "against {a_bg} backdrop",
    "on {bg}",
    "with {a_bg} background",
    "over {a_bg} background",
)
#: Two-object relations: (words, arrangement, whether the first-named object is left/top).
#: "and" / "next to" name no order.
RELATIONS: tuple[tuple[str, str | None, bool | None], ...] = (
    ("left of", "horizontal", True),
    ("to the left of", "horizontal", True),
    ("right of", "horizontal", False),
    ("to the right of", "horizontal", False),
    ("above", "vertical", True),
    ("below", "vertical", False),
    ("beneath", "vertical", False),
    ("next to", "horizontal", None),
    ("and", None, None),
)

# --- meaning -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptionMeaning:
    """What a caption names; None means "not said", so any value fits."""

    background: str | None
    colours: tuple[str | None, ...]
    shapes: tuple[str, ...]
    size: str | None = None
    position: str | None = None
    arrangement: str | None = None  # two objects: None when the caption gives no direction
    ordered: bool = False  # two objects: colours/shapes are listed left/top object first

    def fits(self, scene: Scene) -> bool:
        """Whether `scene` is a correct picture for this caption."""
        if len(self.shapes) != len(scene.objects):
            return False
        if self.background is not None and self.background != scene.background:
            return False
        if len(scene.objects) == 1:
            (obj,) = scene.objects
            return (
                self.shapes[0] == obj.shape
                and self.colours[0] in (None, obj.colour)
                and self.size in (None, obj.size)
                and self.position in (None, obj.position)
            )
        if self.arrangement is not None and self.arrangement != scene.arrangement:
            return False
        named = list(zip(self.colours, self.shapes, strict=True))
        orders = [named] if self.ordered else [named, named[::-1]]
        return any(
            all(c in (None, o.colour) and s == o.shape for (c, s), o in zip(order, scene.objects, strict=True))
            for order in orders
        )


# --- grammar -----------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, words: tuple[str, ...]) -> str:
    return words[int(rng.integers(len(words)))]


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _background_phrase(rng: np.random.Generator, colour_word: str) -> str:
    return _pick(rng, BACKGROUND_PHRASES).format(bg=colour_word, a_bg=_with_article(colour_word))


def caption_single(
    rng: np.random.Generator,
    scene: Scene,
    *,
    name_background: bool | None = None,
    name_position: bool | None = None,
    name_size: bool | None = None,
    name_colour: bool | None = None,
) -> tuple[str, CaptionMeaning]:
    """A caption for a one-object scene; each name_* forces (True/False) or samples (None)."""
    (obj,) = scene.objects
    if name_colour is None:
        name_colour = rng.random() < 0.95
    if name_background is None:
        name_background = rng.random() < 0.9
    if name_position is None:
        name_position = rng.random() < (0.4 if obj.position == "centre" else 0.85)
    if name_size is None:
        name_size = rng.random() < (0.2 if obj.size == "medium" else 0.6)
    colour = _pick(rng, COLOUR_WORDS[obj.colour]) if name_colour else ""
    shape = _pick(rng, SHAPE_WORDS[obj.shape])
    size = _pick(rng, SIZE_WORDS[obj.size]) if name_size else ""
    bg_word = _pick(rng, COLOUR_WORDS[scene.background])
    background = _background_phrase(rng, bg_word) if name_background else ""
    position = _pick(rng, POSITION_WORDS[obj.position]) if name_position else ""
    noun = " ".join(w for w in (size, colour, shape) if w)
    template = int(rng.integers(6))
    if template == 0:
        parts = [_with_article(noun), background, position]
    elif template == 1:
        parts = [_with_article(noun), position, background]
    elif template == 2 and name_background:
        # Terse, tag-like: "red star, blue background, on the left"
        parts = [", ".join(p for p in (noun, f"{bg_word} background", position) if p)]
    elif template == 3 and colour:
        parts = [_with_article(" ".join(w for w in (size, shape) if w)), f"in {colour}", background, position]
    elif template == 4:
        parts = ["a picture of " + _with_article(noun), background, position]
    else:
        parts = [_with_article(noun), background, position]
    text = " ".join(p for p in parts if p)
    meaning = CaptionMeaning(
        background=scene.background if name_background else None,
        colours=(obj.colour if name_colour else None,),
        shapes=(obj.shape,),
        size=obj.size if name_size else None,
        position=obj.position if name_position else None,
    )
    return text, meaning


def caption_pair(
    rng: np.random.Generator, scene: Scene, *, name_background: bool | None = None, relation: str | None = None
) -> tuple[str, CaptionMeaning]:
    """A caption for a two-object scene: "a red circle left of a blue square on white"."""
    if name_background is None:
        name_background = rng.random() < 0.75
    fitting = [r for r in RELATIONS if r[1] in (None, scene.arrangement)]
    if relation is not None:
        fitting = [r for r in fitting if r[0] == relation]
    words, arrangement, first_is_left_or_top = fitting[int(rng.integers(len(fitting)))]
    named = list(scene.objects)
    if first_is_left_or_top is False or (first_is_left_or_top is None and rng.random() < 0.5):
        named = named[::-1]
    phrases = [_with_article(f"{_pick(rng, COLOUR_WORDS[o.colour])} {_pick(rng, SHAPE_WORDS[o.shape])}") for o in named]
    text = f"{phrases[0]} {words} {phrases[1]}"
    if name_background:
        text += " " + _background_phrase(rng, _pick(rng, COLOUR_WORDS[scene.background]))
    # An ordered meaning lists the objects left/top first, whatever order the words name them in.
    listed = scene.objects if first_is_left_or_top is not None else named
    meaning = CaptionMeaning(
        background=scene.background if name_background else None,
        colours=tuple(o.colour for o in listed),
        shapes=tuple(o.shape for o in listed),
        arrangement=arrangement,
        ordered=first_is_left_or_top is not None,
    )
    return text, meaning


def caption_scene(rng: np.random.Generator, scene: Scene) -> tuple[str, CaptionMeaning]:
    if len(scene.objects) == 1:
        return caption_single(rng, scene)
    return caption_pair(rng, scene)


# --- examples ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    scene: Scene
    caption: str
    meaning: CaptionMeaning


#: How a scene gets its caption: `caption_scene`, or a grammar built on it (phrasings.py).
Captioner = Callable[[np.random.Generator, Scene], tuple[str, CaptionMeaning]]


def sample_examples(
    rng: np.random.Generator,
    n: int,
    *,
    pair_fraction: float = 0.25,
    split: str = "train",
    caption: Captioner = caption_scene,
) -> list[Example]:
    """`n` scenes with a caption each, from the "train" or "heldout" combinations."""
    examples = []
    for _ in range(n):
        scene = sample_pair(rng, split) if rng.random() < pair_fraction else sample_single(rng, split)
        examples.append(Example(scene, *caption(rng, scene)))
    return examples


def sample_contrastive_batch(
    rng: np.random.Generator,
    n: int,
    *,
    group: int = 4,
    pair_fraction: float = 0.25,
    caption: Captioner = caption_scene,
) -> list[Example]:
    """`n` examples in groups of `group` near-identical scenes, so that in-batch negatives
    differ by one attribute and the contrastive loss has to learn every attribute."""
    examples: list[Example] = []
    while len(examples) < n:
        base = sample_pair(rng) if rng.random() < pair_fraction else sample_single(rng)
        scenes = [base]
        for _ in range(group - 1):
            scenes.append(perturb(rng, scenes[int(rng.integers(len(scenes)))]))
        for scene in scenes[: n - len(examples)]:
            examples.append(Example(scene, *caption(rng, scene)))
    return examples
