"""The built-in model's world: coloured shapes on coloured backgrounds.

What a scene *is* — the colours, shapes, sizes and positions it is made of, and the geometry each
object is drawn with — and how scenes are drawn at random from a numpy Generator, so everything
is deterministic from a seed. Captions are engine/builtin/captions.py, and pixels
engine/builtin/drawing.py; this module needs numpy only, so the bench and the tests can import
the dataset without torch.

A fixed set of colour × shape × background triples (`HELD_OUT_TRIPLES`) never appears in
training, in either object of a scene; the benchmark asks for exactly those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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
SHAPES = ("circle", "square", "triangle", "star", "heart", "ring", "cross", "diamond", "crescent")
#: Radius of each size as a fraction of the image side.
SIZES: dict[str, float] = {"small": 0.13, "medium": 0.19, "large": 0.26}
#: Centre of each position as (x, y) fractions of the image side, y downwards.
POSITIONS: dict[str, tuple[float, float]] = {
    "centre": (0.5, 0.5),
    "left": (0.27, 0.5),
    "right": (0.73, 0.5),
    "top": (0.5, 0.27),
    "bottom": (0.5, 0.73),
}
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


def perturb(rng: np.random.Generator, scene: Scene) -> Scene:
    """The same scene with one attribute changed, or two colours swapped (a hard negative for
    contrastive training: a one-object scene's colour and background, two objects' colours).

    Returns a training scene (never a held-out combination).
    """
    for _ in range(20):
        if len(scene.objects) == 1:
            (obj,) = scene.objects
            what = _choice(rng, ("colour", "shape", "background", "size", "position", "swap_colours"))
            colour, shape, bg, size, pos = obj.colour, obj.shape, scene.background, obj.size, obj.position
            if what == "swap_colours":  # the binding hard negative: "red star on blue" / "blue star on red"
                colour, bg = bg, colour
            elif what == "colour":
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
