"""Phrasing families (engine/builtin/phrasings.py): split whole between training and held out,
each asks for what its subject is, and the bench asks every held-out family about the same
held-out scenes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from engine.builtin.captions import COLOUR_WORDS, SHAPE_WORDS
from engine.builtin.phrasings import HELD_OUT_FAMILIES, TRAINING_FAMILIES, TYPO_KINDS, Subject, phrase, typo_of_kind
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


def test_a_worded_family_says_each_prompt_in_one_of_its_templates_and_uses_them_all():
    """The held-out families with several sentence templates keep them as data, so the text probe
    can ask in one template at a time (`phrase_in`) what the family asks in all of them."""
    from engine.builtin.phrasings import HELD_OUT_WORDINGS, phrase_in

    assert set(HELD_OUT_WORDINGS) <= set(HELD_OUT_FAMILIES)
    subject = Subject("white", "star", "blue")
    for family, templates in HELD_OUT_WORDINGS.items():
        said = {phrase_in(t, subject, np.random.default_rng(0)): t for t in templates}
        assert len(said) == len(templates)
        rng = np.random.default_rng(1)
        drawn = {phrase(family, subject, rng) for _ in range(60)}
        assert drawn == set(said), family
    assert phrase_in(HELD_OUT_WORDINGS["colour_after"][0], subject, np.random.default_rng(0)) == (
        "a star coloured white on a blue background"
    )


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


#: Words that only held-out families use: a training caption with one of them would leak a
#: held-out wording into training.
HELD_OUT_MARKERS = (
    "draw",
    "paint",
    "render",
    "create",
    "just ",
    "there",
    "exactly",
    "single",
    " bg",
    "w/",
    "coloured",
    "which is",
    "behind it",
    "thanks",
    "thank you",
    "poster",
    "slides",
    "if possible",
)


def test_training_captions_mix_in_training_families_and_noise_words_only():
    from engine.builtin.captions import sample_examples
    from engine.builtin.phrasings import NOISE_WORDS, training_caption

    rng = np.random.default_rng(3)
    examples = sample_examples(rng, 3000, pair_fraction=0.25, caption=training_caption)
    texts = [e.caption.lower() for e in examples]
    assert all(e.meaning.fits(e.scene) for e in examples)
    leaked = [t for t in texts if any(marker in t for marker in HELD_OUT_MARKERS)]
    assert leaked == []
    # Some captions come from training families, some carry a noise word, most are templates.
    assert sum(t.startswith(("could i get", "can i have", "i want", "show me")) for t in texts) > 50
    assert sum(any(f" {w} " in f" {t} " for w in NOISE_WORDS) for t in texts) > 150
    assert sum(" background" in t or " backdrop" in t for t in texts) > 1500


def test_the_template_grammar_alone_is_unchanged_by_the_hook():
    """Without `caption=`, sampling draws exactly what it drew before (the shipped recipe)."""
    from engine.builtin.captions import caption_scene, sample_examples

    plain = sample_examples(np.random.default_rng(4), 200)
    hooked = sample_examples(np.random.default_rng(4), 200, caption=caption_scene)
    assert [e.caption for e in plain] == [e.caption for e in hooked]


def test_invented_words_and_letter_slips_stay_clear_of_held_out_wordings():
    from engine.builtin.phrasings import held_out_slips, invented_word, slip_letters

    rng = np.random.default_rng(5)
    words = [invented_word(rng) for _ in range(5000)]
    assert all(2 <= len(w) <= 7 and w.isalpha() for w in words)
    assert not [w for w in words if any(m.strip() in w for m in HELD_OUT_MARKERS if m.strip().isalpha())]
    text = "a purple triangle on a red background"
    slipped_words, twice = 0, 0
    for _ in range(300):
        slipped = slip_letters(text, rng)
        for before, after in zip(text.split(" "), slipped.split(" "), strict=True):
            if before == after:
                continue
            slipped_words += 1
            # Letters replaced or put in, one or two of them: never fewer letters than before,
            # never one of the typos family's own slips (a letter doubled, dropped, two swapped).
            assert len(before) <= len(after) <= len(before) + 2
            assert after not in held_out_slips(before)
            assert not any(m.strip() in after for m in HELD_OUT_MARKERS)
            twice += _edits(before, after) == 2
            assert 1 <= _edits(before, after) <= 2
    assert slipped_words > 300 * 1.3  # often more than one word slips, as in the typos family
    assert twice > slipped_words * 0.3  # and half the slipped words slip twice (some undo or merge)
    assert slip_letters("a b on c", rng) == "a b on c"  # no word long enough to slip


def test_held_out_slips_are_the_typos_family_own():
    from engine.builtin.phrasings import held_out_slips

    # Doubled, dropped, swapped with the next: never the first letter or the last.
    assert held_out_slips("star") == {"sttar", "staar", "sar", "str", "satr", "stra"}


def _edits(a: str, b: str) -> int:
    """Levenshtein distance (letters replaced, put in or left out)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def test_training_families_put_the_background_first_and_the_colour_after_its_shape():
    """Some training wordings name the background before the object or the colour after the
    shape, so "the last colour is the background" is not a rule the model can learn."""
    rng = np.random.default_rng(6)
    subject = Subject("red", "star", "blue")
    families = ("fields", "described", "backdrop_first", "background_leads", "colour_aside")
    texts = [phrase(family, subject, rng) for family in families for _ in range(30)]
    assert any(t.index("blue") < t.index("red") for t in texts)
    assert any(t.index("star") < t.index("red") for t in texts)
    one_word = Subject("green", "square", "blue")  # words with no synonyms
    for _ in range(20):  # each of these families in every caption
        leads, aside = phrase("background_leads", one_word, rng), phrase("colour_aside", one_word, rng)
        assert leads.index("blue") < leads.index("green") and aside.index("square") < aside.index("green")


def test_a_dropped_word_is_a_little_one_and_the_meaning_stays():
    from engine.builtin.phrasings import DROPPABLE_WORDS, drop_a_word

    rng = np.random.default_rng(7)
    text = "a red star on a blue background"
    dropped = {drop_a_word(text, rng) for _ in range(200)}
    # Each of "a" (twice, the same result for either), "on" and "background" can go; nothing else.
    assert dropped == {
        "red star on a blue background",
        "a red star on blue background",
        "a red star a blue background",
        "a red star on a blue",
    }
    assert drop_a_word("red star", rng) == "red star"  # no little word: unchanged
    assert drop_a_word("a", rng) == "a"  # a caption is never emptied
    assert not DROPPABLE_WORDS & {w for words in COLOUR_WORDS.values() for w in words}
    assert not DROPPABLE_WORDS & {w for words in SHAPE_WORDS.values() for w in words}


def test_training_captions_leave_out_a_little_word_at_the_drop_rate(monkeypatch):
    """The same draws with WORD_DROP_RATE 0 and 1: the second caption is the first less one
    droppable word, and means the same."""
    from engine.builtin import phrasings
    from engine.builtin.scenes import sample_single

    monkeypatch.setattr(phrasings, "LETTER_SLIP_RATE", 0.0)  # a slip after the drop would draw differently
    scenes = [sample_single(np.random.default_rng(seed)) for seed in range(300)]
    captions = {}
    for rate in (0.0, 1.0):
        monkeypatch.setattr(phrasings, "WORD_DROP_RATE", rate)
        captions[rate] = [phrasings.training_caption(np.random.default_rng(i), s) for i, s in enumerate(scenes)]
    dropped = 0
    for (kept, meaning), (shorter, same_meaning), scene in zip(captions[0.0], captions[1.0], scenes, strict=True):
        assert meaning == same_meaning and meaning.fits(scene)
        words, left = kept.split(" "), shorter.split(" ")
        if any(w.lower() in phrasings.DROPPABLE_WORDS for w in words):
            missing = [w for w in words if w not in left or words.count(w) > left.count(w)]
            assert len(left) == len(words) - 1 and missing and missing[0].lower() in phrasings.DROPPABLE_WORDS
            dropped += 1
        else:
            assert shorter == kept
    assert dropped > 250


def test_typo_of_kind_makes_each_held_out_slip_and_refuses_an_unknown_kind():
    """The typos family's slips, one kind at a time (bench/text_probe.py reads each); a kind it
    does not know is refused by name rather than returning the word unchanged."""
    assert [typo_of_kind("square", kind, 2) for kind in TYPO_KINDS] == ["squuare", "sqare", "sqaure"]
    with pytest.raises(ValueError, match="unknown kind of typo 'replace'"):
        typo_of_kind("square", "replace", 2)
