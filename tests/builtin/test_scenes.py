"""The built-in model's data generator: determinism, held-out combinations, captions."""

from __future__ import annotations

import numpy as np
import pytest

from engine.builtin import scenes
from engine.builtin.captions import (
    COLOUR_WORDS,
    SHAPE_WORDS,
    CaptionMeaning,
    caption_pair,
    sample_contrastive_batch,
    sample_examples,
)
from engine.builtin.drawing import render_scene
from engine.builtin.scenes import HELD_OUT_TRIPLES, SHOWCASE_TRIPLES


def test_same_seed_same_examples_and_pixels():
    """Two generators with the same seed produce identical captions and images."""
    first = sample_examples(np.random.default_rng(3), 50)
    second = sample_examples(np.random.default_rng(3), 50)
    assert [e.caption for e in first] == [e.caption for e in second]
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(np.asarray(render_scene(a.scene)), np.asarray(render_scene(b.scene)))


def test_different_seeds_differ():
    """Different seeds give different data."""
    first = sample_examples(np.random.default_rng(3), 20)
    second = sample_examples(np.random.default_rng(4), 20)
    assert [e.caption for e in first] != [e.caption for e in second]


def test_held_out_set_is_fixed_and_spares_showcase_prompts():
    """The held-out triples do not depend on anything but their own seed, and the README's
    example prompts are trained on."""
    assert scenes._held_out_triples() == HELD_OUT_TRIPLES
    assert len(HELD_OUT_TRIPLES) == 95
    assert not HELD_OUT_TRIPLES & SHOWCASE_TRIPLES


def test_training_data_never_contains_held_out_triples():
    """No object of any training scene (plain or contrastive batches) is a held-out triple."""
    rng = np.random.default_rng(0)
    batches = sample_examples(rng, 3000, pair_fraction=0.3) + sample_contrastive_batch(rng, 2000)
    for example in batches:
        assert not example.scene.is_held_out(), example.caption


def test_one_object_hard_negatives_include_its_colours_swapped():
    """A one-object scene's perturbations include the object's colour and the background's
    swapped ("a red star on blue" beside "a blue star on red"), the negative that teaches the text
    tower which colour a wording gives the background. No perturbation is a held-out scene."""
    rng = np.random.default_rng(5)
    base = scenes.single_object_scene(rng, "red", "star", "blue", "medium", "centre")
    perturbed = [scenes.perturb(rng, base) for _ in range(300)]
    swapped = [
        s for s in perturbed if s.background == "red" and s.objects[0].colour == "blue" and s.objects[0].shape == "star"
    ]
    assert len(swapped) > 300 / 6 / 2  # one kind of change in six
    assert not any(s.is_held_out() for s in perturbed)


def test_held_out_split_only_contains_held_out_triples():
    """The evaluation split draws single objects only from the held-out triples."""
    for example in sample_examples(np.random.default_rng(1), 300, pair_fraction=0.0, split="heldout"):
        assert example.scene.is_held_out()


def test_every_attribute_pair_is_still_trained():
    """Holding out triples removes no colour-shape, shape-background or colour-background pair."""
    trained = set(scenes.all_triples()) - HELD_OUT_TRIPLES
    for held in HELD_OUT_TRIPLES:
        colour, shape, background = held
        assert any(t[:2] == (colour, shape) for t in trained)
        assert any(t[1:] == (shape, background) for t in trained)
        assert any((t[0], t[2]) == (colour, background) for t in trained)


def test_every_caption_fits_its_own_scene():
    """A caption's meaning always describes the scene it was written for."""
    rng = np.random.default_rng(2)
    for example in sample_examples(rng, 3000, pair_fraction=0.4):
        assert example.meaning.fits(example.scene), example.caption


def test_captions_name_the_scene_attributes():
    """The words of a caption name the colours and shapes its meaning says it names."""
    rng = np.random.default_rng(5)
    for example in sample_examples(rng, 1000, pair_fraction=0.4):
        meaning = example.meaning
        for colour, shape in zip(meaning.colours, meaning.shapes, strict=True):
            assert any(word in example.caption for word in SHAPE_WORDS[shape])
            if colour is not None:
                assert any(word in example.caption for word in COLOUR_WORDS[colour])
        if meaning.background is not None:
            assert any(word in example.caption for word in COLOUR_WORDS[meaning.background])


def test_meaning_rejects_wrong_scenes():
    """A caption does not fit a scene with another colour, shape, background or position."""
    rng = np.random.default_rng(6)
    scene = scenes.single_object_scene(rng, "red", "star", "blue", "small", "left")
    assert CaptionMeaning("blue", ("red",), ("star",), position="left").fits(scene)
    assert CaptionMeaning(None, (None,), ("star",)).fits(scene)
    assert not CaptionMeaning("blue", ("green",), ("star",)).fits(scene)
    assert not CaptionMeaning("blue", ("red",), ("heart",)).fits(scene)
    assert not CaptionMeaning("white", ("red",), ("star",)).fits(scene)
    assert not CaptionMeaning("blue", ("red",), ("star",), position="right").fits(scene)


@pytest.mark.parametrize("relation, fits_swapped", [("left of", False), ("and", True)])
def test_pair_meaning_respects_order_only_when_the_caption_gives_one(relation, fits_swapped):
    """ "a red circle left of a blue square" fits only that order; "... and ..." fits both."""
    rng = np.random.default_rng(7)
    scene = scenes.two_object_scene(rng, ("red", "circle"), ("blue", "square"), "white", "horizontal")
    swapped = scenes.two_object_scene(rng, ("blue", "square"), ("red", "circle"), "white", "horizontal")
    text, meaning = caption_pair(rng, scene, relation=relation)
    assert meaning.fits(scene)
    assert meaning.fits(swapped) is fits_swapped, text


def test_renders_have_the_named_colours():
    """A rendered scene's corner is the background colour and its object's colour is present."""
    rng = np.random.default_rng(8)
    scene = scenes.single_object_scene(rng, "red", "square", "blue", "large", "centre")
    pixels = np.asarray(render_scene(scene, 64)).astype(int)
    assert np.abs(pixels[0, 0] - scenes.COLOURS["blue"]).max() <= 8
    assert np.abs(pixels[32, 32] - scenes.COLOURS["red"]).max() <= 8
