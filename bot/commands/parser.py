"""Parse command text (`/imagine a red star --seed 4 --n 2`) into typed commands.

One parser for every text front-end (console, Slack); Discord's typed options build the same
command objects. Every mistake gets its own message saying what was wrong and what is accepted.

Grammar (options may come in any order after the prompt; `—` is accepted for `--` because
phones "correct" the double dash):

    /imagine <prompt> [--seed N] [--n 1-4] [--ar W:H] [--no TEXT] [--steps N]
                      [--prior-steps N] [--decoder-steps N] [--upscale-steps N]
                      [--guidance X] [--prior-guidance X] [--prior diffusion|ar|none]
                      [--model NAME]
    /vary <image> [--strength 0.05-1] [--n 1-4] [--seed N]     image: 12:3, 12, or last:3
    /blend <image> <image> [<image> <image>] [--weights 1,2,...]   /upscale <image>
    /reroll [job]    /cancel [job]    /history [page]    /thread [job]    /quota    /help
    /imagine-admin quota set|grant|reset <target> [N|unlimited]
    /imagine-admin ban <user> [reason]    /imagine-admin unban <user>
    /imagine-admin block-term <term>      /imagine-admin unblock-term <term>
    /imagine-admin audit [N]   /imagine-admin stats [days]   /imagine-admin mod-role add|remove <role>

Slack sends everything after `/imagine`: `history`, `quota`, `thread 12` ... are read as
sub-commands only when the whole text fits them (so "history of rome" is still a prompt).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from bot.commands.admin import parse_admin
from bot.commands.types import (
    USAGE,
    Blend,
    Cancel,
    Command,
    Edit,
    Gallery,
    Help,
    History,
    Imagine,
    Quota,
    Reroll,
    Thread,
    Upscale,
    Vary,
)
from engine.domain import limits as bounds
from engine.domain.edits import PAN_DIRECTIONS, EditSpec, check, parse_region
from engine.domain.errors import UsageError
from engine.domain.limits import MAX_SEED
from engine.domain.types import (
    ASPECTS,
    PRIORS,
    EditRequest,
    ImageRef,
    ImagineRequest,
    RenderParams,
    VariationRequest,
)

T = TypeVar("T")


MAX_COMMAND_CHARS = 4000

# --- options ---------------------------------------------------------------------------------

_IMAGINE_OPTIONS = {
    "seed",
    "n",
    "ar",
    "no",
    "steps",
    "prior-steps",
    "decoder-steps",
    "upscale-steps",
    "guidance",
    "prior-guidance",
    "prior",
    "model",
}
_VARY_OPTIONS = {"strength", "n", "seed", "toward", "amount"}
_BLEND_OPTIONS = {"weights", "n", "seed", "strip"}
_FLAG = re.compile(r"^(?:--|—|–)([a-z][a-z-]*)$")


def _split_options(words: list[str], allowed: set[str], command: str) -> tuple[list[str], dict[str, str]]:
    """Split words into the leading free text and `--name value...` options."""
    head: list[str] = []
    options: dict[str, list[str]] = {}
    current: str | None = None
    for word in words:
        match = _FLAG.match(word.lower())
        if match:
            name = match.group(1)
            if name not in allowed:
                raise UsageError(
                    f"Unknown option --{name} for {command}; options are "
                    + ", ".join(f"--{o}" for o in sorted(allowed))
                    + "."
                )
            if name in options:
                raise UsageError(f"--{name} is given twice; give it once.")
            options[name] = []
            current = name
        elif current is None:
            head.append(word)
        else:
            options[current].append(word)
    values = {}
    for name, parts in options.items():
        if not parts:
            raise UsageError(f"--{name} needs a value.")
        values[name] = " ".join(parts)
    return head, values


def _int(name: str, text: str, low: int, high: int) -> int:
    return bounds.whole_number(text, what=f"--{name}", low=low, high=high, signed=True)


def _float(name: str, text: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--{name} must be a number, got {text!r}.") from None
    if value != value or not low <= value <= high:  # NaN fails too
        raise UsageError(f"--{name} must be between {low:g} and {high:g}, got {text}.")
    return value


def _prior(text: str) -> str:
    cleaned = text.strip().lower()
    if cleaned not in PRIORS:
        raise UsageError(f"--prior must be one of {', '.join(PRIORS)}, got {text[:40]!r}.")
    return cleaned


def _aspect(text: str) -> str:
    cleaned = text.replace(" ", "").replace("/", ":").replace("x", ":")
    if cleaned not in ASPECTS:
        raise UsageError(f"--ar must be one of {', '.join(ASPECTS)}, got {text!r}.")
    return cleaned


@dataclass(frozen=True)
class Limits:
    max_steps: int = 100
    max_guidance: float = 30.0


def _render_params(options: dict[str, str], limits: Limits) -> RenderParams:
    def steps(name: str) -> int | None:
        # --steps sets the prior and decoder steps; a stage's own option overrides it.
        given = name if name in options else ("steps" if name != "upscale-steps" else None)
        if given is None or given not in options:
            return None
        return _int(given, options[given], 2, limits.max_steps)

    def guidance(name: str) -> float | None:
        return _float(name, options[name], 0, limits.max_guidance) if name in options else None

    return RenderParams(
        n=_int("n", options["n"], 1, 4) if "n" in options else 4,
        prior_steps=steps("prior-steps"),
        decoder_steps=steps("decoder-steps"),
        super_res_steps=steps("upscale-steps"),
        decoder_guidance=guidance("guidance"),
        prior_guidance=guidance("prior-guidance"),
        aspect=_aspect(options["ar"]) if "ar" in options else "1:1",
        strength=_float("strength", options["strength"], 0.05, 1.0) if "strength" in options else None,
        prior=_prior(options["prior"]) if "prior" in options else None,
    )


# --- references ------------------------------------------------------------------------------

# ASCII digits only ("\d" would take any script's digits); how large a number may be is
# bounds.job_id's to say ("There is no job #…"), not the pattern's.
_JOB = re.compile(r"^#?([0-9]{1,40})$")
_IMAGE = re.compile(r"^#?([0-9]{1,40}|last)[:/.]([0-9]{1,40})$", re.IGNORECASE)


def parse_job_ref(text: str) -> int:
    match = _JOB.match(text.strip())
    if not match:
        raise UsageError(f"{text[:40]!r} is not a job number; job numbers look like 12 or #12.")
    return bounds.job_id(int(match.group(1)))


def parse_image_ref(text: str) -> ImageRef:
    """`12:3` (job 12, image 3), `12` (a one-image job), `last:3` (your latest grid)."""
    text = text.strip()
    match = _IMAGE.match(text)
    if match:
        job, index = match.groups()
        index = int(index)
        if not 1 <= index <= 4:
            raise UsageError(f"Image numbers go from 1 to 4, got {index}.")
        return ImageRef(None if job.lower() == "last" else bounds.job_id(int(job)), index)
    if _JOB.match(text):
        return ImageRef(parse_job_ref(text), None)
    raise UsageError(
        f"{text[:40]!r} is not an image reference; use 12:3 (job 12, image 3), 12 (a one-image job) "
        "or last:3 (image 3 of your latest job)."
    )


# --- commands --------------------------------------------------------------------------------


def parse_command(text: str, limits: Limits = Limits()) -> Command:
    """Parse one command line; raise UsageError with a specific message when it is wrong."""
    if text is None or not text.strip():
        raise UsageError("Type a command, e.g. `/imagine a red star on a blue background`.")
    if len(text) > MAX_COMMAND_CHARS:
        raise UsageError(f"That command is {len(text)} characters long; the limit is {MAX_COMMAND_CHARS}.")
    words = text.split()
    head = words[0].lower()
    if not head.startswith("/"):
        raise UsageError(f"Commands start with /, e.g. `/imagine {text.strip()[:40]}`.")
    name, rest = head[1:], words[1:]
    if name == "imagine":
        return parse_imagine_text(" ".join(rest), limits)
    if name == "imagine-admin":
        return parse_admin(rest)
    sub = _parse_subcommand(name, rest, limits)
    if sub is None:
        raise UsageError(f"Unknown command /{name}. Commands:\n{USAGE}")
    return sub


def parse_imagine_text(text: str, limits: Limits = Limits()) -> Command:
    """What follows `/imagine`: a sub-command (Slack style) or a prompt with options."""
    words = text.split()
    if words:
        sub = _parse_subcommand(words[0].lower(), words[1:], limits, strict=False)
        if sub is not None:
            return sub
    if not words:
        raise UsageError("The prompt is empty: say what to imagine, e.g. `/imagine a red star`.")
    head, options = _split_options(words, _IMAGINE_OPTIONS, "/imagine")
    prompt = " ".join(head)
    if not prompt:
        raise UsageError("The prompt is missing: put it before the options, e.g. `/imagine a red star --seed 3`.")
    return Imagine(
        ImagineRequest(
            prompt=prompt,
            negative_prompt=options.get("no"),
            seed=_seed(options),
            model=options.get("model"),
            params=_render_params(options, limits),
        )
    )


# --- sub-commands: one small parser each ------------------------------------------------------
#
# Each takes the words after the command name. `strict` is False when the words follow
# `/imagine` (Slack style) and may be a prompt instead: then a parser raises _NotASubcommand
# where the words do not fit, and the text is read as a prompt ("history of rome").


class _NotASubcommand(Exception):
    """The words look like a prompt, not like the sub-command they start with."""


def _fits(strict: bool, parse: Callable[[], T]) -> T:
    """`parse()`, except that when not strict a UsageError means "this is a prompt"."""
    try:
        return parse()
    except UsageError:
        if not strict:
            raise _NotASubcommand from None
        raise


def _no_more(name: str, rest: list[str], strict: bool, message: str) -> None:
    if rest:
        if not strict:
            raise _NotASubcommand
        raise UsageError(message)


def _optional(name: str, rest: list[str], strict: bool, parse: Callable[[str], T], default: T) -> T:
    """At most one argument, parsed by `parse`; `default` without one."""
    if not rest:
        return default
    if len(rest) > 1:
        if not strict:
            raise _NotASubcommand
        raise UsageError(f"/{name} takes at most one argument, got {len(rest)}.")
    return _fits(strict, lambda: parse(rest[0]))


def _page(text: str) -> int:
    if bounds.is_whole_number(text, low=1, high=bounds.MAX_HISTORY_PAGE):
        return int(text)
    if bounds.is_whole_number(text, low=1, high=10**40):
        raise UsageError(f"There is no page {text.strip()}; history has at most {bounds.MAX_HISTORY_PAGE:,} pages.")
    raise UsageError(f"Pages are numbered from 1, got {text[:40]!r}.")


def _seed(options: dict[str, str]) -> int | None:
    return _int("seed", options["seed"], 0, MAX_SEED) if "seed" in options else None


def _vary(rest: list[str], limits: Limits, strict: bool) -> Command:
    if not rest:
        if not strict:
            raise _NotASubcommand
        raise UsageError("Say which image to vary, e.g. `/vary 12:3` or `/vary last:2`.")
    ref = _fits(strict, lambda: parse_image_ref(rest[0]))
    extra, options = _split_options(rest[1:], _VARY_OPTIONS, "/vary")
    if extra:
        raise UsageError(f"Unexpected text after the image: {' '.join(extra)!r}.")
    return Vary(
        VariationRequest(
            image=ref,
            seed=_seed(options),
            params=_render_params(options, limits),
            toward=options.get("toward"),
            amount=_float("amount", options["amount"], *bounds.EDIT_AMOUNT) if "amount" in options else None,
        )
    )


def _blend(rest: list[str], limits: Limits, strict: bool) -> Command:
    refs_text, options = _split_options(rest, _BLEND_OPTIONS, "/blend")
    if not refs_text and not strict:
        raise _NotASubcommand
    refs = _fits(strict, lambda: tuple(parse_image_ref(text) for text in refs_text))
    if not 2 <= len(refs) <= 4:
        raise UsageError(f"Blend 2 to 4 images, e.g. `/blend 12:1 12:3`; got {len(refs)}.")
    weights = None
    if "weights" in options:
        weights = tuple(
            _float("weights", w, 0, bounds.MAX_BLEND_WEIGHT) for w in options["weights"].replace(",", " ").split()
        )
        if len(weights) != len(refs):
            raise UsageError(f"--weights needs one number per image ({len(refs)}), got {len(weights)}.")
    return Blend(
        refs,
        weights,
        seed=_seed(options),
        params=_render_params(options, limits),
        strip=_int("strip", options["strip"], *bounds.STRIP_FRAMES) if "strip" in options else None,
    )


def _edit_words(
    name: str, rest: list[str], strict: bool, flags: set[str]
) -> tuple[ImageRef, dict[str, str], list[str]]:
    """The image, the one-word options, and the other words (a prompt or a direction)."""
    if not rest:
        if not strict:
            raise _NotASubcommand
        raise UsageError(f"Say which image, e.g. `/{name} 12:3`.")
    ref = _fits(strict, lambda: parse_image_ref(rest[0]))
    options: dict[str, str] = {}
    words: list[str] = []
    items = iter(rest[1:])
    for word in items:
        match = _FLAG.match(word.lower())
        if not match:
            words.append(word)
            continue
        option = match.group(1)
        if option not in flags:
            raise UsageError(
                f"Unknown option --{option} for /{name}; options are "
                + ", ".join(f"--{o}" for o in sorted(flags))
                + "."
            )
        if option in options:
            raise UsageError(f"--{option} is given twice; give it once.")
        value = next(items, None)
        if value is None:
            raise UsageError(f"--{option} needs a value.")
        options[option] = value
    return ref, options, words


def _edit_params(options: dict[str, str]) -> RenderParams:
    return RenderParams(n=_int("n", options["n"], 1, 4) if "n" in options else 4)


def _edit(rest: list[str], limits: Limits, strict: bool) -> Command:
    ref, options, words = _edit_words("edit", rest, strict, {"region", "seed", "n"})
    if "region" not in options:
        raise UsageError("Say which part to redraw: --region left|right|top|bottom|centre or X,Y,W,H.")
    spec = EditSpec("region", parse_region(options["region"]))
    return Edit(EditRequest(ref, spec.to_dict(), " ".join(words) or None, _seed(options), _edit_params(options)))


def _zoomout(rest: list[str], limits: Limits, strict: bool) -> Command:
    ref, options, words = _edit_words("zoomout", rest, strict, {"factor", "seed", "n"})
    if words:
        raise UsageError(f"Unexpected text after the image: {' '.join(words)[:60]!r}.")
    factor = _float("factor", options["factor"], 1.5, 2.0) if "factor" in options else 2.0
    spec = check(EditSpec("zoomout", factor=factor))
    return Edit(EditRequest(ref, spec.to_dict(), None, _seed(options), _edit_params(options)))


def _pan(rest: list[str], limits: Limits, strict: bool) -> Command:
    ref, options, words = _edit_words("pan", rest, strict, {"seed", "n"})
    if len(words) != 1 or words[0].lower() not in PAN_DIRECTIONS:
        raise UsageError(f"Say which way to pan: /pan <image> {'|'.join(PAN_DIRECTIONS)}.")
    spec = EditSpec("pan", direction=words[0].lower())
    return Edit(EditRequest(ref, spec.to_dict(), None, _seed(options), _edit_params(options)))


def _upscale(rest: list[str], limits: Limits, strict: bool) -> Command:
    if len(rest) != 1:
        if not strict:
            raise _NotASubcommand
        raise UsageError("Say which one image to upscale, e.g. `/upscale 12:3`.")
    return Upscale(_fits(strict, lambda: parse_image_ref(rest[0])))


def _quota(rest: list[str], limits: Limits, strict: bool) -> Command:
    _no_more("quota", rest, strict, "/quota takes no arguments.")
    return Quota()


def _help(rest: list[str], limits: Limits, strict: bool) -> Command:
    if rest and not strict:
        raise _NotASubcommand
    return Help()


def _gallery(rest: list[str], limits: Limits, strict: bool) -> Command:
    _no_more("gallery", rest, strict, "/gallery takes no arguments.")
    return Gallery()


_SUBCOMMANDS: dict[str, Callable[[list[str], Limits, bool], Command]] = {
    "vary": _vary,
    "blend": _blend,
    "edit": _edit,
    "zoomout": _zoomout,
    "pan": _pan,
    "upscale": _upscale,
    "reroll": lambda rest, _, strict: Reroll(_optional("reroll", rest, strict, parse_job_ref, None)),
    "cancel": lambda rest, _, strict: Cancel(_optional("cancel", rest, strict, parse_job_ref, None)),
    "history": lambda rest, _, strict: History(_optional("history", rest, strict, _page, 1)),
    "thread": lambda rest, _, strict: Thread(_optional("thread", rest, strict, parse_job_ref, None)),
    "quota": _quota,
    "help": _help,
    "gallery": _gallery,
}


def _parse_subcommand(name: str, rest: list[str], limits: Limits, *, strict: bool = True) -> Command | None:
    """Parse a non-prompt command; None if `name` is not one (or, unless strict, does not fit)."""
    parse = _SUBCOMMANDS.get(name)
    if parse is None:
        return None
    try:
        return parse(rest, limits, strict)
    except _NotASubcommand:
        return None
