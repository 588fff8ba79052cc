"""The job/result contract shared by adapters, the service and the worker.

Frozen dataclasses with `to_dict`/`from_dict`, so a request can be stored in a JSON column and
read back by the worker without either side importing the other's libraries.
"""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from engine.domain.errors import UsageError
from engine.domain.limits import MAX_IMAGES_PER_JOB


class Platform(StrEnum):
    DISCORD = "discord"
    SLACK = "slack"
    CONSOLE = "console"


class GenerationKind(StrEnum):
    IMAGINE = "imagine"
    VARIATION = "variation"
    REROLL = "reroll"
    BLEND = "blend"
    UPSCALE = "upscale"
    EDIT = "edit"  # a region redrawn, a zoom-out or a pan (params["edit"] says which)


class GenerationStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (GenerationStatus.DONE, GenerationStatus.FAILED, GenerationStatus.CANCELLED)


class MessageRole(StrEnum):
    """What a message the bot posted is to its job (recorded, so a reaction or a button on it, or
    a retried delivery, finds the job)."""

    PROGRESS = "progress"  # the job's status message, edited as it runs (Discord: into the result)
    RESULT = "result"  # the result: the grid or one image, with its buttons
    FILE = "file"  # Slack: the uploaded grid (message id `file:<file id>`)
    SHARE = "share"  # Slack: the message the uploaded grid was shared in
    THREAD = "thread"  # Discord: a lineage's variation thread (message id: the thread's id)
    COPY = "copy"  # Discord: a result sent to someone's DMs (✉️)


ACTIVE_STATUSES = (GenerationStatus.QUEUED, GenerationStatus.RUNNING)
FINAL_STATUSES = (GenerationStatus.DONE, GenerationStatus.FAILED, GenerationStatus.CANCELLED)

ASPECTS = ("1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3")
#: How an unCLIP model turns the prompt into an image embedding (the unCLIP paper's comparison):
#: its diffusion prior, its autoregressive prior (the built-in model has both), or no prior at
#: all (the text embedding decoded directly).
PRIORS = ("diffusion", "ar", "none")


@dataclass(frozen=True)
class Actor:
    """Who is asking, as the adapter knows them: platform ids, not database ids."""

    platform: Platform
    team_id: str
    user_id: str
    user_name: str = ""
    team_name: str = ""
    role_ids: tuple[str, ...] = ()
    #: Discord Manage Server, a Slack workspace admin/owner, the console's local operator.
    is_platform_admin: bool = False


@dataclass(frozen=True)
class RenderParams:
    """Per-request knobs. None means "the model's default"."""

    n: int = MAX_IMAGES_PER_JOB
    prior_steps: int | None = None
    decoder_steps: int | None = None
    super_res_steps: int | None = None
    prior_guidance: float | None = None
    decoder_guidance: float | None = None
    aspect: str = "1:1"
    strength: float | None = None  # variations: 0 keeps the source, 1 is a fresh decode
    prior: str | None = None  # one of PRIORS; None: the model's default (diffusion)

    def validate(self, *, max_steps: int, max_guidance: float) -> None:
        """Raise UsageError naming the first option that is out of range."""
        if not 1 <= self.n <= MAX_IMAGES_PER_JOB:
            raise UsageError(f"--n must be between 1 and {MAX_IMAGES_PER_JOB}, got {self.n}.")
        for name in ("prior_steps", "decoder_steps", "super_res_steps"):
            value = getattr(self, name)
            if value is not None and not 2 <= value <= max_steps:
                option = "--" + name.replace("_", "-")
                raise UsageError(f"{option} must be between 2 and {max_steps}, got {value}.")
        for name in ("prior_guidance", "decoder_guidance"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= max_guidance:
                option = "--" + name.replace("_", "-")
                raise UsageError(f"{option} must be between 0 and {max_guidance:g}, got {value:g}.")
        if self.aspect not in ASPECTS:
            raise UsageError(f"--ar must be one of {', '.join(ASPECTS)}, got {self.aspect!r}.")
        if self.strength is not None and not 0.05 <= self.strength <= 1.0:
            raise UsageError(f"--strength must be between 0.05 and 1, got {self.strength:g}.")
        if self.prior is not None and self.prior not in PRIORS:
            raise UsageError(f"--prior must be one of {', '.join(PRIORS)}, got {self.prior!r}.")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RenderParams:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class ImagineRequest:
    prompt: str
    negative_prompt: str | None = None
    seed: int | None = None
    model: str | None = None
    params: RenderParams = field(default_factory=RenderParams)


@dataclass(frozen=True)
class ImageRef:
    """An image named by a user: `12:3` (job 12, image 3), `12` (a one-image job) or `3` (image 3
    of your latest grid, when `generation_id` is None)."""

    generation_id: int | None
    index: int | None = None

    def __str__(self) -> str:
        if self.generation_id is None:
            return f"image {self.index} of your latest job"
        return f"#{self.generation_id}" + (f":{self.index}" if self.index else "")


@dataclass(frozen=True)
class VariationRequest:
    image: ImageRef
    seed: int | None = None
    params: RenderParams = field(default_factory=RenderParams)
    #: A text diff ("make it winter"): turn the image's embedding toward this text.
    toward: str | None = None
    amount: float | None = None  # 0..1, how far; None: the model's default


@dataclass(frozen=True)
class EditRequest:
    """Redraw part of a stored image: a region from `prompt`, or a zoom-out or pan that
    continues the picture (`edit` is an engine.domain.edits.EditSpec's dict)."""

    image: ImageRef
    edit: dict[str, Any]
    prompt: str | None = None
    seed: int | None = None
    params: RenderParams = field(default_factory=RenderParams)


@dataclass(frozen=True)
class QuotaTarget:
    """Whom a moderator's quota action is about: one user, a role (user group), or the team."""

    kind: str  # user | role | team
    subject: str = ""  # platform user or role id; "" for the team default

    def __str__(self) -> str:
        if self.kind == "team":
            return "the team default"
        return f"{self.kind} {self.subject}"


# Characters that reorder or hide text: allowed nowhere in a prompt (they make moderation and
# display lie about what was asked).
_BIDI_CONTROLS = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F)}


def normalise_prompt(text: str, *, max_chars: int, what: str = "Prompt") -> str:
    """Return the prompt cleaned for rendering, or raise UsageError saying exactly what is wrong."""
    if text is None or not text.strip():
        raise UsageError(f"{what} is empty: say what to imagine, e.g. `/imagine a red star`.")
    text = unicodedata.normalize("NFKC", text)
    for ch in text:
        if ch in _BIDI_CONTROLS:
            raise UsageError(
                f"{what} contains a text-direction control character (U+{ord(ch):04X}); remove it and try again."
            )
        category = unicodedata.category(ch)
        if category == "Cc" and ch not in "\n\t":
            raise UsageError(f"{what} contains a control character (U+{ord(ch):04X}); remove it and try again.")
        if category in ("Co", "Cs", "Cn"):
            raise UsageError(
                f"{what} contains an unsupported character (U+{ord(ch):04X}: private-use, "
                "unassigned or a lone surrogate)."
            )
    cleaned = " ".join(text.split())
    if len(cleaned) > max_chars:
        raise UsageError(f"{what} is {len(cleaned)} characters long; the limit is {max_chars}.")
    return cleaned
