"""Phrasing families (engine/builtin/phrasings.py): split whole between training and held out,
each asks for what its subject is, and the bench asks every held-out family about the same
held-out scenes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from engine.builtin.captions import COLOUR_WORDS, SHAPE_WORDS
from engine.builtin.phrasings import HELD_OUT_FAMILIES, TRAINING_FAMILIES, Subject, phrase
from engine.builtin.scenes import HELD_OUT_TRIPLES

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))


def test_families_are_split_whole():
    assert not set(TRAINING_FAMILIES) & set(HELD_OUT_FAMILIES)
    assert len(HELD_OUT_FAMILIES) >= 8  # many more wordings than the training templates


@pytest.mark.parametrize("family", sorted({*TRAINING_FAMILIES, *HELD_OUT_FAMILIES} - {"typos"}))
def test_every_family_names_the_colour_shape_and_background(family):
    rng = np.random.default_rng(0)
    for colour, shape, background in sorted(HELD_OUT_TRIPLES)[:30]:
        text = phrase(family, Subject(colour, shape, background), rng).lower()
        assert any(w in text for w in COLOUR_WORDS[colour]), text
        assert any(w in text for w in SHAPE_WORDS[shape]), text
        assert any(w in text for w in COLOUR_WORDS[background]), text


def test_typos_change_long_words_by_one_slip():
    rng = np.random.default_rng(1)
    texts = [phrase("typos", Subject("purple", "triangle", "orange"), rng) for _ in range(20)]
    assert all("background" not in t for t in texts)  # "background" itself always slips
    assert len(set(texts)) > 10


def test_unknown_family_is_named():
    with pytest.raises(KeyError, match="unknown phrasing family 'shouting'"):
        phrase("shouting", Subject("red", "star", "blue"), np.random.default_rng(0))


def test_the_bench_asks_each_held_out_family_about_the_same_held_out_scenes():
    from model_quality import phrasing_probes

    probes = phrasing_probes(6)
    assert set(probes) == set(HELD_OUT_FAMILIES)
    scenes = {family: [(p.colour, p.shape, p.background) for p in ps] for family, ps in probes.items()}
    first = next(iter(scenes.values()))
    assert len(first) == 6 and all(s == first for s in scenes.values())
    assert set(first) <= HELD_OUT_TRIPLES
    assert len({p.prompt for ps in probes.values() for p in ps}) == 6 * len(HELD_OUT_FAMILIES)
