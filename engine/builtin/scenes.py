"""The built-in model's world: coloured shapes on coloured backgrounds, each with a caption.

Everything is deterministic from a seed: `sample_examples(rng, n)` draws scenes and captions with
a numpy Generator, `render_scene(scene, size)` draws one with Pillow. Numpy and Pillow only, so
the bench and the tests can import it without torch.

A fixed set of colour × shape × background triples (`HELD_OUT_TRIPLES`) never appears in
training, in either object of a scene; the benchmark asks for exactly those.

A caption also carries what it *means* (`CaptionMeaning`): which attributes it names. Contrastive
training uses that to know which images a caption fits (a caption that names no position fits
the shape anywhere), instead of assuming each caption fits only its own image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# --- vocabulary --------------------------------------------------------------------------------

#: Named colours and the RGB the generator paints them with; well apart so a pixel judge can
#: name them (the closest two, red and brown, are ~100 apart in RGB).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (245, 220, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "purple": (135, 60, 190),
    "pink": (245, 140, 190),
    "brown": (130, 80, 40),
    "black": (25, 25, 25),
    "white": (240, 240, 240),
    "grey": (128, 128, 128),
    "cyan": (40, 210, 220),
}
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
SHAPES = ("circle", "square", "triangle", "star", "heart", "ring", "cross", "diamond", "crescent")
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
#: Radius of each size as a fraction of the image side.
SIZES: dict[str, float] = {"small": 0.13, "medium": 0.19, "large": 0.26}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "small", "tiny", "little"),
    "medium": ("medium", "medium-sized"),
    "large": ("big", "large", "large", "huge"),
}
#: Centre of each position as (x, y) fractions of the image side, y downwards.
POSITIONS: dict[str, tuple[float, float]] = {
    "centre": (0.5, 0.5),
    "left": (0.27, 0.5),
    "right": (0.73, 0.5),
    "top": (0.5, 0.27),
    "bottom": (0.5, 0.73),
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
TWO_OBJECT_RADIUS = 0.15

COLOUR_NAMES = tuple(COLOURS)
SIZE_NAMES = tuple(SIZES)
POSITION_NAMES = tuple(POSITIONS)

# --- held-out combinations ---------------------------------------------------------------------

HELD_OUT_SEED = 20240607
HELD_OUT_FRACTION = 0.08
#: Triples the README and tests show off: always trained on, never held out.
SHOWCASE_TRIPLES = {("red", "star", "blue"), ("red", "circle", "blue"), ("yellow", "heart", "black")}


def all_triples() -> list[tuple[str, str, str]]:
    """Every (colour, shape, background) with the colour different from the background."""
    return [(c, s, b) for c in COLOURS for s in SHAPES for b in COLOURS if c != b]


def _held_out_triples() -> frozenset[tuple[str, str, str]]:
    # A fixed seed independent of the training seed: the shipped model and the benchmark agree.
    rng = np.random.default_rng(HELD_OUT_SEED)
    candidates = [t for t in all_triples() if t not in SHOWCASE_TRIPLES]
    count = round(HELD_OUT_FRACTION * len(candidates))
    chosen = rng.choice(len(candidates), size=count, replace=False)
    return frozenset(candidates[i] for i in sorted(chosen))


HELD_OUT_TRIPLES: frozenset[tuple[str, str, str]] = _held_out_triples()

# --- scenes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneObject:
    """One shape: its named attributes and the exact geometry it is drawn with."""

    colour: str
    shape: str
    size: str  # a SIZES key; "medium" for both objects of a two-object scene
    position: str  # a POSITIONS key; for two objects, where this one sits ("left", "top", ...)
    cx: float
    cy: float
    radius: float
    angle: float  # degrees
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    """A background and one or two objects; with two, `objects[0]` is the left or top one."""

    background: str
    background_rgb: tuple[int, int, int]
    objects: tuple[SceneObject, ...]
    arrangement: str | None = None  # "horizontal" | "vertical" for two objects

    def triples(self) -> list[tuple[str, str, str]]:
        return [(o.colour, o.shape, self.background) for o in self.objects]

    def is_held_out(self) -> bool:
        return any(t in HELD_OUT_TRIPLES for t in self.triples())


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


@dataclass(frozen=True)
class Example:
    scene: Scene
    caption: str
    meaning: CaptionMeaning


def _jitter_rgb(rng: np.random.Generator, name: str) -> tuple[int, int, int]:
    base = np.array(COLOURS[name])
    red, green, blue = (int(v) for v in np.clip(base + rng.integers(-8, 9, size=3), 0, 255))
    return red, green, blue


def _make_object(
    rng: np.random.Generator,
    colour: str,
    shape: str,
    size: str,
    position: str,
    centre: tuple[float, float],
    radius: float,
) -> SceneObject:
    angle = 0.0 if shape in ("circle", "ring") else float(rng.uniform(-10, 10))
    if shape == "crescent":
        angle = float(rng.uniform(-20, 20))
    return SceneObject(
        colour=colour,
        shape=shape,
        size=size,
        position=position,
        cx=centre[0] + float(rng.uniform(-0.04, 0.04)),
        cy=centre[1] + float(rng.uniform(-0.04, 0.04)),
        radius=radius * float(rng.uniform(0.92, 1.08)),
        angle=angle,
        rgb=_jitter_rgb(rng, colour),
    )


def single_object_scene(
    rng: np.random.Generator, colour: str, shape: str, background: str, size: str, position: str
) -> Scene:
    obj = _make_object(rng, colour, shape, size, position, POSITIONS[position], SIZES[size])
    return Scene(background, _jitter_rgb(rng, background), (obj,))


def two_object_scene(
    rng: np.random.Generator, first: tuple[str, str], second: tuple[str, str], background: str, arrangement: str
) -> Scene:
    """`first` is drawn left (horizontal) or on top (vertical)."""
    where = ("left", "right") if arrangement == "horizontal" else ("top", "bottom")
    objects = tuple(
        _make_object(rng, colour, shape, "medium", pos, POSITIONS[pos], TWO_OBJECT_RADIUS)
        for (colour, shape), pos in zip((first, second), where, strict=True)
    )
    return Scene(background, _jitter_rgb(rng, background), objects, arrangement)


# --- captions ----------------------------------------------------------------------------------


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


# --- sampling ----------------------------------------------------------------------------------


def _choice(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _random_triple(rng: np.random.Generator, split: str, background: str | None = None) -> tuple[str, str, str]:
    """A (colour, shape, background) triple from the split: "train" avoids the held-out set."""
    if split == "heldout":
        pool = sorted(HELD_OUT_TRIPLES)
        if background is not None:
            pool = [t for t in pool if t[2] == background]
        return pool[int(rng.integers(len(pool)))]
    while True:
        bg = background or _choice(rng, COLOUR_NAMES)
        triple = (_choice(rng, COLOUR_NAMES), _choice(rng, SHAPES), bg)
        if triple[0] != bg and triple not in HELD_OUT_TRIPLES:
            return triple


def sample_single(rng: np.random.Generator, split: str = "train") -> Scene:
    colour, shape, background = _random_triple(rng, split)
    return single_object_scene(rng, colour, shape, background, _choice(rng, SIZE_NAMES), _choice(rng, POSITION_NAMES))


def sample_pair(rng: np.random.Generator, split: str = "train") -> Scene:
    """Two objects of different colours on one background (for "heldout", the first is held out)."""
    first = _random_triple(rng, split)
    while True:
        second = _random_triple(rng, "train", background=first[2])
        if second[0] != first[0]:
            break
    pair = [first[:2], second[:2]]
    if rng.random() < 0.5:
        pair.reverse()
    arrangement = "horizontal" if rng.random() < 0.5 else "vertical"
    return two_object_scene(rng, pair[0], pair[1], first[2], arrangement)


def caption_scene(rng: np.random.Generator, scene: Scene) -> tuple[str, CaptionMeaning]:
    if len(scene.objects) == 1:
        return caption_single(rng, scene)
    return caption_pair(rng, scene)


def sample_examples(
    rng: np.random.Generator, n: int, *, pair_fraction: float = 0.25, split: str = "train"
) -> list[Example]:
    """`n` scenes with a caption each, from the "train" or "heldout" combinations."""
    examples = []
    for _ in range(n):
        scene = sample_pair(rng, split) if rng.random() < pair_fraction else sample_single(rng, split)
        examples.append(Example(scene, *caption_scene(rng, scene)))
    return examples


def perturb(rng: np.random.Generator, scene: Scene) -> Scene:
    """The same scene with one attribute changed (a hard negative for contrastive training).

    Returns a training scene (never a held-out combination).
    """
    for _ in range(20):
        if len(scene.objects) == 1:
            (obj,) = scene.objects
            what = _choice(rng, ("colour", "shape", "background", "size", "position"))
            colour, shape, bg, size, pos = obj.colour, obj.shape, scene.background, obj.size, obj.position
            if what == "colour":
                colour = _choice(rng, COLOUR_NAMES)
            elif what == "shape":
                shape = _choice(rng, SHAPES)
            elif what == "background":
                bg = _choice(rng, COLOUR_NAMES)
            elif what == "size":
                size = _choice(rng, SIZE_NAMES)
            else:
                pos = _choice(rng, POSITION_NAMES)
            candidate = single_object_scene(rng, colour, shape, bg, size, pos)
        else:
            a, b = ((o.colour, o.shape) for o in scene.objects)
            what = _choice(rng, ("swap_colours", "swap_order", "colour", "arrangement", "background"))
            assert scene.arrangement is not None  # two objects always have one
            bg, arrangement = scene.background, scene.arrangement
            if what == "swap_colours":  # the binding hard negative
                a, b = (b[0], a[1]), (a[0], b[1])
            elif what == "swap_order":
                a, b = b, a
            elif what == "colour":
                a = (_choice(rng, COLOUR_NAMES), a[1])
            elif what == "arrangement":
                arrangement = "vertical" if arrangement == "horizontal" else "horizontal"
            else:
                bg = _choice(rng, COLOUR_NAMES)
            if a[0] == b[0] or bg in (a[0], b[0]):
                continue
            candidate = two_object_scene(rng, a, b, bg, arrangement)
        if any(o.colour == candidate.background for o in candidate.objects):
            continue
        if candidate.is_held_out() or candidate == scene:
            continue
        return candidate
    return sample_single(rng)


def sample_contrastive_batch(
    rng: np.random.Generator, n: int, *, group: int = 4, pair_fraction: float = 0.25
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
            examples.append(Example(scene, *caption_scene(rng, scene)))
    return examples


# --- drawing -----------------------------------------------------------------------------------

SUPERSAMPLE = 4


def _polygon(shape: str) -> list[tuple[float, float]]:
    """Outline of a shape of radius ~1 centred on the origin (y down)."""
    if shape == "square":
        return [(-0.82, -0.82), (0.82, -0.82), (0.82, 0.82), (-0.82, 0.82)]
    if shape == "triangle":
        return [
            (math.cos(a) * 1.1, -math.sin(a) * 1.1 + 0.12)
            for a in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3)
        ]
    if shape == "star":
        points = []
        for k in range(10):
            r = 1.1 if k % 2 == 0 else 0.46
            a = math.pi / 2 + k * math.pi / 5
            points.append((math.cos(a) * r, -math.sin(a) * r))
        return points
    if shape == "heart":
        points = []
        for k in range(48):
            t = 2 * math.pi * k / 48
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            points.append((x / 16.5, -y / 16.5 - 0.1))
        return points
    if shape == "cross":
        w = 0.34
        return [
            (-w, -1),
            (w, -1),
            (w, -w),
            (1, -w),
            (1, w),
            (w, w),
            (w, 1),
            (-w, 1),
            (-w, w),
            (-1, w),
            (-1, -w),
            (-w, -w),
        ]
    if shape == "diamond":
        return [(0, -1.15), (0.78, 0), (0, 1.15), (-0.78, 0)]
    raise ValueError(f"no polygon for {shape!r}")


def _disc(draw: ImageDraw.ImageDraw, x: float, y: float, r: float, fill: int) -> None:
    draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)


def object_mask(obj: SceneObject, size: int) -> Image.Image:
    """Anti-aliased coverage mask ("L") of one object on a `size` × `size` canvas."""
    big = size * SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    x, y, r = obj.cx * big, obj.cy * big, obj.radius * big
    if obj.shape == "circle":
        _disc(draw, x, y, r, 255)
    elif obj.shape == "ring":
        _disc(draw, x, y, r, 255)
        _disc(draw, x, y, r * 0.55, 0)
    elif obj.shape == "crescent":
        _disc(draw, x, y, r, 255)
        # The bite is taken from the upper right, turned by the object's angle.
        a = math.radians(obj.angle)
        dx, dy = 0.45 * math.cos(a) + 0.2 * math.sin(a), 0.45 * math.sin(a) - 0.2 * math.cos(a)
        _disc(draw, x + dx * r, y + dy * r, r * 0.85, 0)
    else:
        a = math.radians(obj.angle)
        cos, sin = math.cos(a), math.sin(a)
        draw.polygon(
            [(x + r * (px * cos - py * sin), y + r * (px * sin + py * cos)) for px, py in _polygon(obj.shape)],
            fill=255,
        )
    return mask.reduce(SUPERSAMPLE)


def render_scene(scene: Scene, size: int = 64) -> Image.Image:
    """Draw a scene as an RGB image of `size` × `size` pixels."""
    image = Image.new("RGB", (size, size), scene.background_rgb)
    for obj in scene.objects:
        image.paste(Image.new("RGB", (size, size), obj.rgb), (0, 0), object_mask(obj, size))
    return image


def render_batch(scenes: list[Scene], size: int = 64) -> np.ndarray:
    """(N, size, size, 3) uint8."""
    return np.stack([np.asarray(render_scene(s, size)) for s in scenes])
