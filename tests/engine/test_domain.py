"""Pure domain rules: prompt validation, render parameter bounds, quota precedence, periods."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.domain.errors import UsageError
from engine.domain.quota import PolicyRule, describe_duration, effective_limit, period_start
from engine.domain.types import RenderParams, normalise_prompt

NOW = datetime(2026, 11, 27, 15, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("", "Prompt is empty"),
        ("   \n\t ", "Prompt is empty"),
        ("x" * 1001, "Prompt is 1001 characters long; the limit is 1000"),
        ("a bell\x07", "control character (U+0007)"),
        ("a \x1b[31mred\x1b[0m star", "control character (U+001B)"),
        ("evil \u202etext", "text-direction control character (U+202E)"),
        ("hidden \u2066isolate", "text-direction control character (U+2066)"),
        ("private \ue000 use", "unsupported character (U+E000"),
        ("unassigned \U000e0fff", "unsupported character (U+E0FFF"),
    ],
)
def test_prompt_errors(prompt, message):
    """Each kind of bad prompt is refused with its own message."""
    with pytest.raises(UsageError) as error:
        normalise_prompt(prompt, max_chars=1000)
    assert message in error.value.message


@pytest.mark.parametrize(
    ("prompt", "cleaned"),
    [
        ("  a   red\nstar ", "a red star"),
        ("ａ ｒｅｄ star", "a red star"),  # full-width letters normalised (NFKC)
        ("a 🧑‍🚀 astronaut", "a 🧑‍🚀 astronaut"),  # zero-width joiner in emoji is kept
        ("café", "café"),
    ],
)
def test_prompt_cleaning(prompt, cleaned):
    """Whitespace collapses and unicode is NFKC-normalised; legitimate text survives."""
    assert normalise_prompt(prompt, max_chars=1000) == cleaned


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (RenderParams(n=0), "--n must be between 1 and 4"),
        (RenderParams(decoder_steps=1), "--decoder-steps must be between 2 and 100"),
        (RenderParams(prior_guidance=-1.0), "--prior-guidance must be between 0 and 30"),
        (RenderParams(aspect="7:1"), "--ar must be one of"),
        (RenderParams(strength=0.0), "--strength must be between 0.05 and 1"),
    ],
)
def test_render_params_bounds(params, message):
    """Typed options from any adapter are bounded by the domain, with the option's name."""
    with pytest.raises(UsageError) as error:
        params.validate(max_steps=100, max_guidance=30.0)
    assert message in error.value.message


def rule(scope, subject="", limit=None, **kw):
    return PolicyRule(scope, subject, limit, **kw)


def test_user_override_beats_roles_and_team():
    """A user's own limit wins over their roles and the team default."""
    limit = effective_limit(
        [rule("team", limit=10), rule("role", "artists", 50), rule("user", "bob", 3)],
        user_id="bob",
        role_ids=("artists",),
        default_limit=100,
        now=NOW,
    )
    assert (limit.limit, limit.source) == (3, "your personal limit")


def test_most_generous_role_wins():
    """Among a user's roles the largest limit applies, and unlimited beats any number."""
    rules = [rule("team", limit=10), rule("role", "a", 20), rule("role", "b", 40)]
    assert effective_limit(rules, user_id="u", role_ids=("a", "b"), default_limit=5, now=NOW).limit == 40
    rules.append(rule("role", "c", None, unlimited=True))
    assert effective_limit(rules, user_id="u", role_ids=("a", "c"), default_limit=5, now=NOW).limit is None


def test_team_default_then_server_default():
    """Without user or role rules the team default applies, else the configured default."""
    assert effective_limit([rule("team", limit=7)], user_id="u", role_ids=(), default_limit=5, now=NOW).limit == 7
    assert effective_limit([], user_id="u", role_ids=(), default_limit=5, now=NOW).source == "the server default"


def test_rule_without_limit_does_not_set_one():
    """A role row that only carries a grant leaves the limit to the next rule."""
    rules = [rule("team", limit=7), rule("role", "a", None, bonus=3, bonus_day=NOW)]
    limit = effective_limit(rules, user_id="u", role_ids=("a",), default_limit=5, now=NOW)
    assert (limit.limit, limit.bonus) == (7, 3)


def test_role_bonus_expires_with_the_day():
    """A role grant counts only on the day it was given."""
    rules = [rule("role", "a", 5, bonus=3, bonus_day=NOW - timedelta(days=1))]
    assert effective_limit(rules, user_id="u", role_ids=("a",), default_limit=5, now=NOW).bonus == 0


def test_period_is_the_utc_day():
    """Quota periods start at 00:00 UTC."""
    assert period_start(NOW) == datetime(2026, 11, 27, tzinfo=UTC)
    assert describe_duration(timedelta(hours=8, minutes=30)) == "8 h 30 min"
    assert describe_duration(timedelta(seconds=10)) == "1 min"


@pytest.mark.parametrize(
    "prompt",
    [
        "a red circle",
        "a\u200b r\u200ded c\u2060ircle",  # zero-width space, joiner, word joiner
        "a r\u00aded circle",  # soft hyphen
        "a RED   Circle",  # case and spacing
        "a ｒｅｄ circle",  # full-width letters
        "a r\u0435d circle",  # Cyrillic е
        "a red \u0441ircle",  # Cyrillic с
        "a ré\u0301d circle",  # combining accents
        "a red\u200e circle",  # a direction mark
    ],
)
def test_blocked_terms_match_what_looks_the_same(prompt):
    """A blocked term is found however it is hidden: invisible characters, case, width,
    accents, and Cyrillic or Greek letters that look Latin."""
    from engine.domain.terms import blocked_term_in

    assert blocked_term_in(prompt, ["red circle"]) == "red circle"


@pytest.mark.parametrize("prompt", ["a reddish circle", "a red square", "bored circle", "101 dalmatians"])
def test_blocked_terms_match_whole_words_only(prompt):
    """Only the term as words: longer words that contain it, and ASCII digits that look like
    letters, are left alone."""
    from engine.domain.terms import blocked_term_in

    assert blocked_term_in(prompt, ["red circle", "lol"]) is None
