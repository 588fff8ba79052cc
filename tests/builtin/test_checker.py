"""The benchmark's judge: pixel statistics for colours and positions on generated images."""

from __future__ import annotations

import numpy as np

from engine.builtin.checker import background_rgb, degrade, judge_region, name_colour, split_pair
from engine.builtin.drawing import render_scene
from engine.builtin.scenes import COLOURS, sample_pair, sample_single, single_object_scene


def test_name_colour_names_every_generator_colour():
    """Each generator colour, slightly off, is named back correctly."""
    for name, rgb in COLOURS.items():
        assert name_colour(np.array(rgb) + 7) == name


def test_colours_and_positions_of_generated_scenes():
    """On clean and degraded generator images the judge gets colours and positions right."""
    rng = np.random.default_rng(0)
    scenes = [sample_single(rng) for _ in range(400)]
    right = {"background": 0, "foreground": 0, "position": 0}
    for i, scene in enumerate(scenes):
        image = np.asarray(render_scene(scene, 64), dtype=np.float32)
        if i % 2:
            image = degrade(image, rng)
        region = judge_region(image)
        right["background"] += region.background == scene.background
        right["foreground"] += region.foreground == scene.objects[0].colour
        right["position"] += region.position == scene.objects[0].position
    assert right["background"] == len(scenes)
    assert right["foreground"] >= 0.99 * len(scenes)
    assert right["position"] >= 0.98 * len(scenes)


def test_each_position_is_recognised():
    """A medium circle at each named position is judged to be there."""
    rng = np.random.default_rng(1)
    for position in ("centre", "left", "right", "top", "bottom"):
        scene = single_object_scene(rng, "yellow", "circle", "black", "medium", position)
        assert judge_region(np.asarray(render_scene(scene, 64), dtype=np.float32)).position == position


def test_empty_picture_has_no_foreground():
    """A plain background is judged as having no object at all."""
    image = np.full((64, 64, 3), COLOURS["green"], dtype=np.float32)
    region = judge_region(image)
    assert region.background == "green"
    assert region.foreground is None and region.position is None


def test_pair_halves_carry_each_object_colour():
    """Splitting a two-object scene along its arrangement finds each object's colour."""
    rng = np.random.default_rng(2)
    for _ in range(50):
        scene = sample_pair(rng)
        image = np.asarray(render_scene(scene, 64), dtype=np.float32)
        background = background_rgb(image)
        halves = split_pair(image, scene.arrangement)
        colours = [judge_region(half, background).foreground for half in halves]
        assert colours == [o.colour for o in scene.objects]
