"""Prompts as people type them: phrasing families over the built-in model's world.

The caption templates in `captions.py` are how the model was trained ("a red star on a blue
background"). Chat users write "draw a red star on blue", "blue background, red star pls" or
"a red sttar on a bleu background". Each family here is one way of phrasing a single-object
scene (colour, shape, background); `bench/model_quality.py` renders the held-out families'
prompts and reports each family separately, so a model is judged on wordings it never saw.

Families are split whole: `TRAINING_FAMILIES` may be mixed into training captions,
`HELD_OUT_FAMILIES` never are (`tests/builtin/test_phrasings.py` checks the split), so a good
score on a held-out family means the model generalised, not that it memorised a template.

Numpy only, like scenes.py and captions.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.builtin.captions import COLOUR_WORDS, SHAPE_WORDS


@dataclass(frozen=True)
class Subject:
    """What a phrased prompt asks for (the words are chosen per prompt from the vocabularies)."""

    colour: str
    shape: str
    background: str


Phrase = Callable[[np.random.Generator, str, str, str], str]  # (rng, colour, shape, background words)


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


# --- families a future training run may mix in -------------------------------------------------


def _polite(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    opener = _pick(rng, ["please draw", "could you draw", "can you make me", "please make", "would you draw"])
    return f"{opener} {_a(colour)} {shape} on {_a(bg)} background"


def _capitals(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    text = f"{_a(colour)} {shape} on {_a(bg)} background"
    return text.upper() if rng.random() < 0.5 else text.title()


def _i_want(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    opener = _pick(rng, ["i want", "i'd like", "give me", "show me"])
    return f"{opener} {_a(colour)} {shape} with {_a(bg)} background"


def _showing(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    noun = _pick(rng, ["an image", "a picture", "an illustration", "a drawing"])
    return f"{noun} showing {_a(colour)} {shape}, the background {bg}"


def _pls(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    return f"{colour} {shape} on {bg} {_pick(rng, ['pls', 'plz', 'thx', 'ty'])}"


# --- families held out of every training run ---------------------------------------------------


def _imperative(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    verb = _pick(rng, ["draw", "paint", "make", "render", "create"])
    return f"{verb} {_a(colour)} {shape} on {bg}"


def _background_first(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    return _pick(
        rng,
        [
            f"{bg} background with {_a(colour)} {shape}",
            f"on {_a(bg)} background, {_a(colour)} {shape}",
            f"{_a(bg)} background and {_a(colour)} {shape} on it",
        ],
    )


def _filler(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    adjective = _pick(rng, ["nice", "cool", "simple", "pretty", "lovely"])
    tail = _pick(rng, ["thanks", "if possible", "for my slides", "thank you so much", "for a poster"])
    return f"just {_a(adjective)} {colour} {shape} on {_a(bg)} background {tail}"


def _typo(word: str, rng: np.random.Generator) -> str:
    """One keyboard slip in a word of four letters or more: a letter doubled, dropped or swapped."""
    if len(word) < 4:
        return word
    i = int(rng.integers(1, len(word) - 1))
    kind = int(rng.integers(3))
    if kind == 0:
        return word[:i] + word[i] + word[i:]
    if kind == 1:
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def _typos(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    return f"{_a(_typo(colour, rng))} {_typo(shape, rng)} on {_a(_typo(bg, rng))} {_typo('background', rng)}"


def _abbreviated(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    return _pick(rng, [f"{colour} {shape}, {bg} bg", f"{colour} {shape} w/ {bg} bg", f"{colour} {shape} / {bg} bg"])


def _colour_after(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    return _pick(
        rng,
        [
            f"{_a(shape)} coloured {colour} on {_a(bg)} background",
            f"{_a(shape)}, {colour}, on {bg}",
            f"{_a(shape)} in {colour} against {bg}",
        ],
    )


def _there_is(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    return _pick(
        rng,
        [
            f"there is {_a(colour)} {shape} on {_a(bg)} background",
            f"there's {_a(colour)} {shape} and the background is {bg}",
        ],
    )


def _spelled_number(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    count = _pick(rng, ["one", "a single", "exactly one", "just one"])
    return f"{count} {colour} {shape} on {_a(bg)} background"


TRAINING_FAMILIES: dict[str, Phrase] = {
    "polite": _polite,
    "capitals": _capitals,
    "i_want": _i_want,
    "showing": _showing,
    "pls": _pls,
}
HELD_OUT_FAMILIES: dict[str, Phrase] = {
    "imperative": _imperative,  # "draw a green square on blue"
    "background_first": _background_first,
    "filler": _filler,
    "typos": _typos,
    "abbreviated": _abbreviated,
    "colour_after": _colour_after,
    "there_is": _there_is,
    "spelled_number": _spelled_number,
}


def phrase(family: str, subject: Subject, rng: np.random.Generator) -> str:
    """A prompt for `subject` in `family`'s wording (synonyms drawn from the model's vocabulary)."""
    make = TRAINING_FAMILIES.get(family) or HELD_OUT_FAMILIES.get(family)
    if make is None:
        raise KeyError(f"unknown phrasing family {family!r}")
    return make(
        rng,
        _pick(rng, COLOUR_WORDS[subject.colour]),
        _pick(rng, SHAPE_WORDS[subject.shape]),
        _pick(rng, COLOUR_WORDS[subject.background]),
    )
