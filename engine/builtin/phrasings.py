"""Prompts as people type them: phrasing families over the built-in model's world.

The caption templates in `captions.py` are how the model was trained ("a red star on a blue
background"). Chat users write "draw a red star on blue", "blue background, red star pls" or
"a red sttar on a bleu background". Each family here is one way of phrasing a single-object
scene (colour, shape, background); `bench/model_quality.py` renders the held-out families'
prompts and reports each family separately, so a model is judged on wordings it never saw.

Families are split whole: `TRAINING_FAMILIES` are mixed into training captions
(`training_caption`, which `train.py` uses), `HELD_OUT_FAMILIES` never are
(`tests/builtin/test_phrasings.py` checks the split, and that training captions never use a
held-out family's distinctive words), so a good score on a held-out family means the model
generalised, not that it memorised a template. Training captions also get a noise word now and
then ("hey", "ok", ...), so unknown words do not throw the text tower off, sometimes lose a
little word ("a red star on blue background"), so fragments read like sentences, and sometimes
slip letters in several words at once ("a purpke triaxngle on a red background").

Numpy only, like scenes.py and captions.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.builtin.captions import COLOUR_WORDS, SHAPE_WORDS, CaptionMeaning, caption_scene
from engine.builtin.scenes import Scene


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
    opener = _pick(rng, ["please give me", "could i get", "can i have", "may i see", "i'd love"])
    return f"{opener} {_a(colour)} {shape} on {_a(bg)} background"


def _capitals(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    text = f"{_a(colour)} {shape} on {_a(bg)} background"
    return text.upper() if rng.random() < 0.5 else text.title()


def _i_want(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    opener = _pick(rng, ["i want", "i'd like", "give me", "show me"])
    return f"{opener} {_a(colour)} {shape} with {_a(bg)} background"


def _showing(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    noun = _pick(rng, ["an image", "a picture", "an illustration", "a sketch"])
    return f"{noun} showing {_a(colour)} {shape}, the background {bg}"


def _pls(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    return f"{colour} {shape} on {bg} {_pick(rng, ['pls', 'plz', 'thx', 'ty'])}"


def _fields(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    """Form-like, in either order: the background may come first, the colour after its shape."""
    return _pick(
        rng,
        [
            f"{shape}: {colour}, background: {bg}",
            f"background: {bg}; {shape}: {colour}",
            f"colour {colour}, shape {shape}, background {bg}",
        ],
    )


def _described(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    """Two clauses, either first: which colour goes with which noun is said by the clause."""
    shape_clause, background_clause = f"the {shape} is {colour}", f"the background is {bg}"
    first, second = (shape_clause, background_clause) if rng.random() < 0.5 else (background_clause, shape_clause)
    return f"{first} and {second}"


def _backdrop_first(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    """The backdrop named before the object (with "backdrop", a template word, not "background")."""
    return _pick(
        rng,
        [
            f"{bg} backdrop, {_a(colour)} {shape}",
            f"against {_a(bg)} backdrop, {_a(colour)} {shape}",
            f"{_a(bg)} backdrop with {_a(colour)} {shape} in front",
        ],
    )


def _in_colour(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    """The colour after its shape, said with "in" or "that is" (the held-out colour_after family
    says it with "coloured", commas or "which is")."""
    return _pick(
        rng,
        [
            f"{_a(shape)} in {colour} on {_a(bg)} background",
            f"{_a(shape)} in {colour}, {bg} background",
            f"{_a(shape)} that is {colour} against {_a(bg)} backdrop",
            f"{shape} in {colour} over {bg}",
        ],
    )


def _terse(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    """Fragments: the words that matter and little else (no abbreviations: those are held out)."""
    return _pick(
        rng,
        [
            f"{colour} {shape} {bg}",
            f"{colour} {shape}. {bg} background.",
            f"{colour} {shape} - {bg}",
            f"{colour} {shape} on {bg} backdrop",
        ],
    )


def _setting_first(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    """The setting before the object, in words other than the held-out background_first's."""
    return _pick(
        rng,
        [
            f"{_a(bg)} scene with {_a(colour)} {shape}",
            f"{bg} all around {_a(colour)} {shape}",
            f"over {bg}, {_a(colour)} {shape}",
        ],
    )


def _background_leads(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    """The word "background" before the object, joined by other words than the held-out
    background_first's ("with", "on ..., a", "and ... on it")."""
    return _pick(
        rng,
        [
            f"{bg} background; {_a(colour)} {shape}",
            f"{bg} background - {colour} {shape}",
            f"{_a(bg)} background behind {_a(colour)} {shape}",
            f"{bg} background holding {_a(colour)} {shape}",
        ],
    )


def _background_joined(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    """The background joined to the object by "and" or "plus", the object first. Two-object
    captions join two shapes with "and", so without this the text tower read the held-out "a blue
    background and a red star on it" as two things and swapped its colours in 0.20 of prompts (the
    prior's embeddings then held the right background for 0.63 of them, against 0.97 for the
    family's other two wordings). The object comes first here, so none of these is a background_first wording."""
    return _pick(
        rng,
        [
            f"{_a(colour)} {shape} and {_a(bg)} background",
            f"{_a(colour)} {shape} and {bg} all around it",
            f"{_a(colour)} {shape}, and the background {bg}",
            f"{_a(colour)} {shape} plus {_a(bg)} background",
        ],
    )


def _colour_aside(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    """The colour said after its shape, set apart (brackets, dashes, "of ... colour"): the held-out
    colour_after family uses "coloured", commas and "which is"."""
    return _pick(
        rng,
        [
            f"{_a(shape)} ({colour}) on {_a(bg)} background",
            f"{_a(shape)} - {colour} - on {bg}",
            f"{_a(shape)} of {colour} colour on {_a(bg)} background",
            f"{_a(shape)} with {colour} colour, {bg} around it",
        ],
    )


def _shorthand(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    """Chat shorthand other than the held-out abbreviated family's ("bg", "w/", "/")."""
    joint = _pick(rng, ["+", "&", "on", "n"])
    backdrop = _pick(rng, ["bkgd", "bkg", "backgr", "backgrnd", "backgd"])
    return f"{colour} {shape} {joint} {bg} {backdrop}"


# --- families held out of every training run ---------------------------------------------------


def _imperative(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    verb = _pick(rng, ["draw", "paint", "make", "render", "create"])
    return f"{verb} {_a(colour)} {shape} on {bg}"


def _filler(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    adjective = _pick(rng, ["nice", "cool", "simple", "pretty", "lovely"])
    tail = _pick(rng, ["thanks", "if possible", "for my slides", "thank you so much", "for a poster"])
    return f"just {_a(adjective)} {colour} {shape} on {_a(bg)} background {tail}"


#: The held-out typos family's kinds of keyboard slip (training slips are of other kinds).
TYPO_KINDS = ("double", "drop", "swap")


def typo_of_kind(word: str, kind: str, at: int) -> str:
    """`word` with the letter at `at` (not the first or last) doubled, dropped or swapped with the next."""
    if kind == "double":
        return word[:at] + word[at] + word[at:]
    if kind == "drop":
        return word[:at] + word[at + 1 :]
    if kind == "swap":
        return word[:at] + word[at + 1] + word[at] + word[at + 2 :]
    raise ValueError(f"unknown kind of typo {kind!r}")


def _typo(word: str, rng: np.random.Generator) -> str:
    """One keyboard slip in a word of four letters or more: a letter doubled, dropped or swapped."""
    if len(word) < 4:
        return word
    at = int(rng.integers(1, len(word) - 1))
    return typo_of_kind(word, TYPO_KINDS[int(rng.integers(3))], at)


def _typos(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    return f"{_a(_typo(colour, rng))} {_typo(shape, rng)} on {_a(_typo(bg, rng))} {_typo('background', rng)}"


def _spelled_number(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
    count = _pick(rng, ["one", "a single", "exactly one", "just one"])
    return f"{count} {colour} {shape} on {_a(bg)} background"


#: The held-out families that say their subject in one of several sentence templates (the others
#: vary words in one order), kept as data so `bench/text_probe.py` can score each template on its
#: own: a family's loss is often one wording's. Fields: colour, shape, bg, and a_colour, a_shape,
#: a_bg (the word with its article).
HELD_OUT_WORDINGS: dict[str, tuple[str, ...]] = {
    "background_first": (
        "{bg} background with {a_colour} {shape}",
        "on {a_bg} background, {a_colour} {shape}",
        "{a_bg} background and {a_colour} {shape} on it",
    ),
    "abbreviated": ("{colour} {shape}, {bg} bg", "{colour} {shape} w/ {bg} bg", "{colour} {shape} / {bg} bg"),
    "colour_after": (
        "{a_shape} coloured {colour} on {a_bg} background",
        "{a_shape}, {colour}, on {bg}",
        "{a_shape} which is {colour}, {bg} behind it",
    ),
    "there_is": (
        "there is {a_colour} {shape} on {a_bg} background",
        "there's {a_colour} {shape} and the background is {bg}",
    ),
}


def _fill(template: str, colour: str, shape: str, bg: str) -> str:
    return template.format(colour=colour, shape=shape, bg=bg, a_colour=_a(colour), a_shape=_a(shape), a_bg=_a(bg))


def _worded(templates: tuple[str, ...]) -> Phrase:
    """A family saying its subject in one of `templates`, drawn uniformly."""

    def make(rng: np.random.Generator, colour: str, shape: str, bg: str) -> str:
        return _fill(_pick(rng, templates), colour, shape, bg)

    return make


TRAINING_FAMILIES: dict[str, Phrase] = {
    "polite": _polite,
    "capitals": _capitals,
    "i_want": _i_want,
    "showing": _showing,
    "pls": _pls,
    "fields": _fields,
    "described": _described,
    "backdrop_first": _backdrop_first,
    "in_colour": _in_colour,
    "terse": _terse,
    "setting_first": _setting_first,
    "background_leads": _background_leads,
    "background_joined": _background_joined,
    "colour_aside": _colour_aside,
    "shorthand": _shorthand,
}
HELD_OUT_FAMILIES: dict[str, Phrase] = {
    "imperative": _imperative,  # "draw a green square on blue"
    "background_first": _worded(HELD_OUT_WORDINGS["background_first"]),
    "filler": _filler,
    "typos": _typos,
    "abbreviated": _worded(HELD_OUT_WORDINGS["abbreviated"]),
    "colour_after": _worded(HELD_OUT_WORDINGS["colour_after"]),
    "there_is": _worded(HELD_OUT_WORDINGS["there_is"]),
    "spelled_number": _spelled_number,
}


#: Share of single-object training captions phrased by a training family; of all training
#: captions, the share that gets a noise word (a chat word, or half the time an invented one) and
#: the share with letters slipped in its long words (`slip_letters`: of other kinds than the
#: held-out typos, which double, drop or swap letters).
PHRASING_MIX = 0.5
NOISE_WORD_RATE = 0.15
LETTER_SLIP_RATE = 0.15
#: Share of training captions with one little word left out ("a red star on blue background"):
#: people skip articles and prepositions, and a model that needs every one reads fragments badly.
WORD_DROP_RATE = 0.15
#: The words that may be left out: none names a colour, a shape, a size, a position or an order.
DROPPABLE_WORDS = frozenset({"a", "an", "the", "on", "of", "with", "background", "backdrop", "and", "is"})
#: Words a chat user adds that mean nothing here; none is a held-out family's own word.
NOISE_WORDS = ("hey", "ok", "so", "um", "very", "really", "awesome", "quick", "maybe", "here")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


#: What an invented word must not contain: the held-out families' own words.
_HELD_OUT_PIECES = ("bg", "draw", "paint", "render", "create", "there", "just", "single", "exactly", "thank", "poster")


def _spells_held_out(word: str) -> bool:
    """Whether a made-up or slipped word contains a held-out family's own word."""
    return any(piece in word.lower() for piece in _HELD_OUT_PIECES)


def invented_word(rng: np.random.Generator) -> str:
    """A made-up word of 2-7 letters: to the tokenizer, a string of pieces it has not seen together."""
    while True:
        word = "".join(_LETTERS[int(i)] for i in rng.integers(len(_LETTERS), size=int(rng.integers(2, 8))))
        if not _spells_held_out(word):
            return word


def slip_letters(text: str, rng: np.random.Generator) -> str:
    """Letter slips in the words of four letters or more: each slips with probability one half (one
    at least), by a letter replaced or a letter put in, and half the time by a second slip of those
    kinds; never into what the held-out typos family makes (a letter doubled, dropped, or two
    swapped), which a second slip could otherwise land on."""
    words = text.split(" ")
    long = [i for i, word in enumerate(words) if len(word) >= 4 and word.isalpha()]
    if not long:
        return text
    chosen = [i for i in long if rng.random() < 0.5] or [long[int(rng.integers(len(long)))]]
    for i in chosen:
        words[i] = _slip_word(words[i], rng)
    return " ".join(words)


#: Share of slipped words that slip twice: a held-out swap changes two letters at once, which
#: one-letter slips alone never show the text tower (it read swapped shape words 0.63).
SECOND_SLIP_SHARE = 0.5


def held_out_slips(word: str) -> set[str]:
    """Every way the held-out typos family can slip `word` (any letter but the first and last)."""
    return {typo_of_kind(word, kind, at) for kind in TYPO_KINDS for at in range(1, len(word) - 1)} - {word}


def _slip_word(word: str, rng: np.random.Generator) -> str:
    held_out = held_out_slips(word)
    for _ in range(10):
        slipped = _one_slip(word, rng)
        if rng.random() < SECOND_SLIP_SHARE:
            slipped = _one_slip(slipped, rng)
        if slipped not in held_out and not _spells_held_out(slipped):
            return slipped
    return word


def _one_slip(word: str, rng: np.random.Generator) -> str:
    """A letter replaced, or a letter put in that doubles none (a doubling is held out)."""
    for _ in range(10):
        at = int(rng.integers(len(word)))
        letter = _LETTERS[int(rng.integers(len(_LETTERS)))]
        if rng.random() < 0.5:
            return word[:at] + letter + word[at + 1 :]
        if letter not in (word[at], word[at - 1] if at else ""):
            return word[:at] + letter + word[at:]
    return word


def training_caption(rng: np.random.Generator, scene: Scene) -> tuple[str, CaptionMeaning]:
    """A training caption: the template grammar (`caption_scene`), or for a share of one-object
    scenes a training family's wording (naming colour, shape and background); sometimes with a
    noise word inserted, a little word left out or letters slipped."""
    if len(scene.objects) == 1 and rng.random() < PHRASING_MIX:
        (obj,) = scene.objects
        family = sorted(TRAINING_FAMILIES)[int(rng.integers(len(TRAINING_FAMILIES)))]
        text = phrase(family, Subject(obj.colour, obj.shape, scene.background), rng)
        meaning = CaptionMeaning(background=scene.background, colours=(obj.colour,), shapes=(obj.shape,))
    else:
        text, meaning = caption_scene(rng, scene)
    if rng.random() < NOISE_WORD_RATE:
        words = text.split(" ")
        noise = _pick(rng, NOISE_WORDS) if rng.random() < 0.5 else invented_word(rng)
        words.insert(int(rng.integers(len(words) + 1)), noise)
        text = " ".join(words)
    if rng.random() < WORD_DROP_RATE:
        text = drop_a_word(text, rng)
    if rng.random() < LETTER_SLIP_RATE:
        text = slip_letters(text, rng)
    return text, meaning


def drop_a_word(text: str, rng: np.random.Generator) -> str:
    """`text` without one of its `DROPPABLE_WORDS` (unchanged if it has none, or only one word)."""
    words = text.split(" ")
    droppable = [i for i, word in enumerate(words) if word.lower() in DROPPABLE_WORDS]
    if not droppable or len(words) < 2:
        return text
    del words[droppable[int(rng.integers(len(droppable)))]]
    return " ".join(words)


def phrase(family: str, subject: Subject, rng: np.random.Generator) -> str:
    """A prompt for `subject` in `family`'s wording (synonyms drawn from the model's vocabulary)."""
    make = TRAINING_FAMILIES.get(family) or HELD_OUT_FAMILIES.get(family)
    if make is None:
        raise KeyError(f"unknown phrasing family {family!r}")
    return make(rng, *_words(subject, rng))


def phrase_in(template: str, subject: Subject, rng: np.random.Generator) -> str:
    """A prompt for `subject` in one of `HELD_OUT_WORDINGS`' templates (synonyms drawn as `phrase` draws them)."""
    return _fill(template, *_words(subject, rng))


def _words(subject: Subject, rng: np.random.Generator) -> tuple[str, str, str]:
    return (
        _pick(rng, COLOUR_WORDS[subject.colour]),
        _pick(rng, SHAPE_WORDS[subject.shape]),
        _pick(rng, COLOUR_WORDS[subject.background]),
    )
