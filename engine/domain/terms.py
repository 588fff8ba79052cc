"""Blocked terms: what a moderator's term is stored as, and how prompts are matched against it.

A prompt is matched on its *skeleton*, so that what looks the same to a reader matches the same:

1. NFKC (full-width letters, ligatures and other compatibility forms become plain ones);
2. format characters removed — zero-width space and joiners, the word joiner, soft hyphens,
   direction marks, variation selectors — the usual way to split a word invisibly;
3. accents and other combining marks removed (`réd` is `red`);
4. letters of other scripts that look like Latin ones become those (Cyrillic `е`, Greek `ο`,
   …: Unicode's confusables table, from the confusable-homoglyphs package);
5. case-folded, and runs of whitespace made one space.

A term matches where its own skeleton appears in the prompt's between word boundaries. Terms
are stored readable (NFKC, case-folded), so moderators see what they typed.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

_FORMAT_CATEGORIES = {"Cf", "Mn", "Me"}


def normalise_term(term: str) -> str:
    """How a blocked term is stored and compared for unblocking."""
    return " ".join(unicodedata.normalize("NFKC", term).casefold().split())


@cache
def _latin_look_alikes() -> dict[str, str]:
    """Non-ASCII characters that Unicode lists as confusable with one ASCII letter or digit."""
    from confusable_homoglyphs import confusables

    table: dict[str, str] = {}
    for character, homoglyphs in confusables.confusables_data.items():
        if len(character) != 1 or character.isascii():
            continue
        latin = [h["c"] for h in homoglyphs if len(h["c"]) == 1 and h["c"].isascii() and h["c"].isalnum()]
        if latin:
            table[character] = latin[0]
    return table


def skeleton(text: str) -> str:
    """The form prompts and terms are matched in (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text)
    text = unicodedata.normalize("NFD", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in _FORMAT_CATEGORIES)
    look_alikes = _latin_look_alikes()
    text = "".join(look_alikes.get(ch, ch) for ch in text)
    return " ".join(text.casefold().split())


def blocked_term_in(prompt: str, terms: list[str]) -> str | None:
    """The first of `terms` the prompt contains, matched on skeletons; None if none does."""
    text = skeleton(prompt)
    for term in terms:
        wanted = skeleton(term)
        if wanted and re.search(r"(?<!\w)" + re.escape(wanted) + r"(?!\w)", text):
            return term
    return None
