"""The shared command parser: every command, every option, every error message."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.commands import (
    AdminAudit,
    AdminBan,
    AdminBlockTerm,
    AdminModRole,
    AdminQuota,
    AdminRetention,
    AdminStats,
    AdminUnban,
    AdminUnblockTerm,
    Blend,
    Cancel,
    Help,
    History,
    Imagine,
    Quota,
    Reroll,
    Thread,
    Upscale,
    Vary,
    parse_command,
)
from engine.domain.errors import UsageError
from engine.domain.types import ImageRef, QuotaTarget

PARSES = [
    ("/imagine a red star", Imagine, {"prompt": "a red star"}),
    ("/imagine a red star --seed 4 --n 2", Imagine, {"prompt": "a red star", "seed": 4, "n": 2}),
    (
        "/imagine a cat --no blurry, dark --ar 16:9",
        Imagine,
        {"prompt": "a cat", "negative_prompt": "blurry, dark", "aspect": "16:9"},
    ),
    ("/imagine a cat —seed 3", Imagine, {"prompt": "a cat", "seed": 3}),  # phone em dash
    ("/imagine a cat --steps 10 --prior-steps 5", Imagine, {"prior_steps": 5, "decoder_steps": 10}),
    ("/imagine a cat --guidance 0", Imagine, {"decoder_guidance": 0.0}),
    ("/imagine a cat --ar 16x9", Imagine, {"aspect": "16:9"}),
    ("/imagine a cat --prior AR", Imagine, {"prior": "ar"}),
    ("/imagine a cat --prior none", Imagine, {"prior": "none"}),
    ("/imagine history of rome", Imagine, {"prompt": "history of rome"}),
    ("/imagine thread of gold", Imagine, {"prompt": "thread of gold"}),
    ("/imagine history", History, {"page": 1}),
    ("/imagine history 3", History, {"page": 3}),
    ("/imagine quota", Quota, {}),
    ("/imagine thread 12", Thread, {"generation_id": 12}),
    ("/imagine vary 12:3", Vary, {"image": ImageRef(12, 3)}),
    ("/vary 12:3 --strength 0.5 --n 2", Vary, {"image": ImageRef(12, 3), "strength": 0.5, "n": 2}),
    ("/vary 12:3 --toward in winter --amount 0.4", Vary, {"toward": "in winter", "amount": 0.4}),
    ("/blend 1:1 2:2 --strip 5", Blend, {"strip": 5, "images": (ImageRef(1, 1), ImageRef(2, 2))}),
    ("/blend 1:1 2:2 3:1 --weights 1,2,3", Blend, {"weights": (1.0, 2.0, 3.0)}),
    ("/upscale last:2", Upscale, {"image": ImageRef(None, 2)}),
    ("/imagine upscale 3:1", Upscale, {"image": ImageRef(3, 1)}),
    ("/imagine-admin stats 30", AdminStats, {"days": 30}),
    ("/imagine-admin retention 30", AdminRetention, {"days": 30}),
    ("/imagine-admin retention forever", AdminRetention, {"days": 0}),
    ("/imagine-admin retention default", AdminRetention, {"days": None}),
    ("/vary #12", Vary, {"image": ImageRef(12, None)}),
    ("/vary last:2", Vary, {"image": ImageRef(None, 2)}),
    ("/reroll", Reroll, {"generation_id": None}),
    ("/reroll #7", Reroll, {"generation_id": 7}),
    ("/cancel 7", Cancel, {"generation_id": 7}),
    ("/history", History, {"page": 1}),
    ("/thread", Thread, {"generation_id": None}),
    ("/quota", Quota, {}),
    ("/help", Help, {}),
    (
        "/imagine-admin quota set @&mods 10",
        AdminQuota,
        {"action": "set", "target": QuotaTarget("role", "mods"), "amount": 10},
    ),
    (
        "/imagine-admin quota set team unlimited",
        AdminQuota,
        {"action": "set", "target": QuotaTarget("team"), "amount": None},
    ),
    (
        "/imagine-admin quota grant <@U123|bob> 5",
        AdminQuota,
        {"action": "grant", "target": QuotaTarget("user", "U123"), "amount": 5},
    ),
    (
        "/imagine-admin quota reset <!subteam^S42|@artists>",
        AdminQuota,
        {"action": "reset", "target": QuotaTarget("role", "S42")},
    ),
    ("/imagine-admin quota reset <@&99>", AdminQuota, {"target": QuotaTarget("role", "99")}),
    ("/imagine-admin ban @bob spamming the channel", AdminBan, {"user_id": "bob", "reason": "spamming the channel"}),
    ("/imagine-admin ban <@!123>", AdminBan, {"user_id": "123", "reason": None}),
    ("/imagine-admin unban @bob", AdminUnban, {"user_id": "bob"}),
    ("/imagine-admin block-term gore", AdminBlockTerm, {"term": "gore"}),
    ("/imagine-admin unblock-term very bad words", AdminUnblockTerm, {"term": "very bad words"}),
    ("/imagine-admin audit", AdminAudit, {"limit": 20}),
    ("/imagine-admin audit 5", AdminAudit, {"limit": 5}),
    ("/imagine-admin mod-role add @&mods", AdminModRole, {"role_id": "mods", "add": True}),
]


def _fields(command) -> dict:
    """Flatten a command and its nested request/params into one dict for comparison."""
    out = dict(vars(command))
    if "request" in out:
        out.update(vars(out.pop("request")))
    if "params" in out:
        out.update(vars(out.pop("params")))
    return out


@pytest.mark.parametrize(("text", "kind", "expected"), PARSES, ids=[p[0] for p in PARSES])
def test_parses(text, kind, expected):
    """Each valid command line parses into the right command with the right values."""
    command = parse_command(text)
    assert isinstance(command, kind)
    fields = _fields(command)
    for key, value in expected.items():
        assert fields[key] == value, key


ERRORS = [
    ("", "Type a command"),
    ("   ", "Type a command"),
    ("imagine a cat", "Commands start with /"),
    ("/frob", "Unknown command /frob"),
    ("/imagine", "The prompt is empty"),
    ("/imagine    ", "The prompt is empty"),
    ("/imagine --seed 3", "The prompt is missing: put it before the options"),
    ("/imagine a cat --seed", "--seed needs a value"),
    ("/imagine a cat --seed x", "--seed must be a whole number, got 'x'"),
    ("/imagine a cat --seed -1", "--seed must be between 0 and 4294967295, got -1"),
    ("/imagine a cat --seed 4294967296", "--seed must be between 0 and 4294967295"),
    ("/imagine a cat --seed 1 --seed 2", "--seed is given twice"),
    ("/imagine a cat --n 0", "--n must be between 1 and 4, got 0"),
    ("/imagine a cat --n 5", "--n must be between 1 and 4, got 5"),
    ("/imagine a cat --n two", "--n must be a whole number"),
    ("/imagine a cat --ar 5:1", "--ar must be one of 1:1"),
    ("/imagine a cat --prior gpt", "--prior must be one of diffusion, ar, none, got 'gpt'"),
    ("/imagine a cat --steps 1", "--steps must be between 2 and 100, got 1"),
    ("/imagine a cat --steps 500", "--steps must be between 2 and 100, got 500"),
    ("/imagine a cat --guidance 31", "--guidance must be between 0 and 30"),
    ("/imagine a cat --guidance nan", "--guidance must be between 0 and 30, got nan"),
    ("/imagine a cat --prior-guidance x", "--prior-guidance must be a number"),
    ("/imagine a cat --strength 0.5", "Unknown option --strength for /imagine"),
    ("/imagine a cat --foo 1", "Unknown option --foo for /imagine"),
    ("/vary", "Say which image to vary"),
    ("/vary abc", "'abc' is not an image reference"),
    ("/vary 12:9", "Image numbers go from 1 to 4, got 9"),
    ("/vary 12:2 extra words", "Unexpected text after the image"),
    ("/vary 12:2 --strength 2", "--strength must be between 0.05 and 1"),
    ("/vary 12:2 --seed 3 --no x", "Unknown option --no for /vary"),
    ("/reroll abc", "'abc' is not a job number"),
    ("/cancel 1 2", "/cancel takes at most one argument, got 2"),
    ("/history 0", "Pages are numbered from 1, got '0'"),
    ("/history two", "Pages are numbered from 1, got 'two'"),
    ("/thread x", "'x' is not a job number"),
    ("/quota now", "/quota takes no arguments"),
    ("/imagine-admin", "Say which admin command to run"),
    ("/imagine-admin frob", "Unknown admin command 'frob'"),
    ("/imagine-admin quota", "Use `quota set <target> <N|unlimited>`"),
    ("/imagine-admin quota set", "Say whose quota to set"),
    ("/imagine-admin quota set @bob", "Use `quota set <target> <N|unlimited>`"),
    ("/imagine-admin quota set @bob ten", "The number of images must be a whole number, got 'ten'"),
    ("/imagine-admin quota set @bob -3", "The number of images must be a whole number, got '-3'"),
    ("/imagine-admin quota set @bob 2000000", "more than the 1,000,000 a quota can hold"),
    ("/imagine-admin quota grant @bob 0", "Grant at least 1 image"),
    ("/imagine-admin quota grant @bob unlimited", "The number of images must be a whole number"),
    ("/imagine-admin quota reset @bob 5", "`quota reset` takes only a target"),
    ("/imagine-admin quota set nobody 5", "'nobody' is not a user, role or team"),
    ("/imagine-admin ban", "Say whom to ban"),
    ("/imagine-admin ban @&mods", "'@&mods' is not a user"),
    ("/imagine-admin unban @bob now", "`unban` takes only the user"),
    ("/imagine-admin ban @bob " + "x" * 501, "The ban reason can be at most 500 characters"),
    ("/imagine-admin block-term", "Say which term"),
    ("/imagine-admin audit 0", "`audit` takes how many entries to show, 1 to 100"),
    ("/imagine-admin mod-role add", "Use `mod-role add <@&role>`"),
    ("/imagine-admin mod-role add @bob", "'@bob' is not a role"),
    ("/blend 1:1", "Blend 2 to 4 images, e.g. `/blend 12:1 12:3`; got 1"),
    ("/blend 1:1 2:2 --weights 1", "--weights needs one number per image (2), got 1"),
    ("/blend 1:1 2:2 --strip 2", "--strip must be between 3 and 8, got 2"),
    ("/upscale", "Say which one image to upscale"),
    ("/vary 1:1 --amount 2", "--amount must be between 0.05 and 1"),
    ("/imagine-admin stats 0", "`stats` takes how many days to cover, 1 to 90"),
    ("/imagine-admin retention", "Use `retention <days>`, `retention forever` or `retention default`"),
    ("/imagine-admin retention 9999", "Retention is a number of days from 1 to 3650, got '9999'"),
    ("/imagine " + "x" * 5000, "That command is 5009 characters long; the limit is 4000"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[e[1][:40] for e in ERRORS])
def test_errors(text, message):
    """Each mistake is refused with its own specific message."""
    with pytest.raises(UsageError) as error:
        parse_command(text)
    assert message in error.value.message


def test_error_messages_are_distinct():
    """No two different mistakes share one message (each says what is wrong)."""
    messages = {}
    for text, _expected in ERRORS:
        with pytest.raises(UsageError) as error:
            parse_command(text)
        messages.setdefault(error.value.message, []).append(text)
    shared = {m: t for m, t in messages.items() if len(t) > 1}
    # Only the same mistake written two ways may share a message.
    assert set(map(tuple, shared.values())) <= {("", "   "), ("/imagine", "/imagine    ")}


@given(st.text(max_size=300))
def test_never_crashes(text):
    """Any text either parses or raises UsageError: never another exception."""
    try:
        parse_command("/imagine " + text)
        parse_command(text)
    except UsageError as error:
        assert error.message


@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=50).filter(
        lambda s: s.strip() and not s.strip().startswith(("-", "—", "–"))
    )
)
def test_prompt_round_trips(prompt):
    """A prompt without options comes back as its words, whatever characters it holds."""
    try:
        command = parse_command("/imagine " + prompt)
    except UsageError:
        return  # words like `--x` inside a prompt are options; that is refused clearly
    if isinstance(command, Imagine):
        assert command.request.prompt == " ".join(prompt.split())
