"""The commands people can give, as typed values: what every front-end turns its input into,
and what the runner (bot/runner.py) takes. `Command` is the union of them all; the
reachability test (tests/bot/test_reachability.py) holds every one reachable on each front-end.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.domain.types import (
    EditRequest,
    ImageRef,
    ImagineRequest,
    QuotaTarget,
    RenderParams,
    VariationRequest,
)


@dataclass(frozen=True)
class Imagine:
    request: ImagineRequest


@dataclass(frozen=True)
class Vary:
    request: VariationRequest


@dataclass(frozen=True)
class Blend:
    images: tuple[ImageRef, ...]
    weights: tuple[float, ...] | None = None
    seed: int | None = None
    params: RenderParams = RenderParams()
    strip: int | None = None  # an interpolation strip of this many frames


@dataclass(frozen=True)
class Edit:
    """A region redrawn from a prompt, a zoom-out or a pan (request.edit says which)."""

    request: EditRequest


@dataclass(frozen=True)
class Upscale:
    image: ImageRef


@dataclass(frozen=True)
class Reroll:
    generation_id: int | None = None


@dataclass(frozen=True)
class Cancel:
    generation_id: int | None = None


@dataclass(frozen=True)
class History:
    page: int = 1


@dataclass(frozen=True)
class Thread:
    generation_id: int | None = None


@dataclass(frozen=True)
class Quota:
    pass


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class Gallery:
    pass


@dataclass(frozen=True)
class AdminQuota:
    action: str  # set | grant | reset
    target: QuotaTarget
    amount: int | None = None  # set: None means unlimited


@dataclass(frozen=True)
class AdminBan:
    user_id: str
    reason: str | None = None


@dataclass(frozen=True)
class AdminUnban:
    user_id: str


@dataclass(frozen=True)
class AdminBlockTerm:
    term: str


@dataclass(frozen=True)
class AdminUnblockTerm:
    term: str


@dataclass(frozen=True)
class AdminAudit:
    limit: int = 20


@dataclass(frozen=True)
class AdminStats:
    days: int = 7


@dataclass(frozen=True)
class AdminRetention:
    days: int | None  # None: back to the server default


@dataclass(frozen=True)
class AdminModRole:
    role_id: str
    add: bool


Command = (
    Imagine
    | Vary
    | Blend
    | Edit
    | Upscale
    | Reroll
    | Cancel
    | History
    | Thread
    | Quota
    | Help
    | Gallery
    | AdminQuota
    | AdminBan
    | AdminUnban
    | AdminBlockTerm
    | AdminUnblockTerm
    | AdminAudit
    | AdminStats
    | AdminRetention
    | AdminModRole
)

USAGE = """\
/imagine <prompt> [--seed N] [--n 1-4] [--ar W:H] [--no TEXT] [--steps N] [--guidance X]
         [--prior diffusion|ar|none]   (how the prompt becomes an image embedding)
/vary <image> [--strength 0.05-1] [--n 1-4] [--seed N] [--toward TEXT [--amount 0.05-1]]
      (image: 12:3, 12, or last:3; --toward turns it toward a text: "--toward in winter")
/blend <image> <image> [<image> <image>] [--weights 1,2,...] [--n 1-4] [--seed N]
/blend <image> <image> --strip 3-8    (an interpolation strip from one to the other)
/edit <image> --region <left|right|top|bottom|centre|X,Y,W,H> <prompt> [--seed N] [--n 1-4]
/zoomout <image> [--factor 1.5|2]   /pan <image> <left|right|up|down>   (both: [--seed N] [--n 1-4])
/upscale <image>   /reroll [job]   /cancel [job]   /history [page]   /thread [job]   /quota
/gallery   (a private link to your team's gallery)
/imagine-admin quota set|grant|reset <@user|@&role|team> [N|unlimited]
/imagine-admin ban|unban <@user> [reason]   block-term|unblock-term <term>
/imagine-admin audit [N]   stats [days]   retention <days|forever|default>
/imagine-admin mod-role add|remove <@&role>"""
