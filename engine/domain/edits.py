"""Edits, zoom-outs and pans, as requests: what to redraw and how it is named, checked where
it is given (a clear refusal, nothing charged). The drawing is engine/render/editing.py's.

- region (edit): a box, `left` … `centre` or X,Y,W,H as fractions of the image, drawn anew
  from a prompt, the rest kept;
- zoomout: the picture shrunk by 1.5 or 2 in the middle, the border drawn around it;
- pan: the picture shifted by a quarter away from the direction, the strip that opens drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from engine.domain.errors import UsageError

REGIONS: dict[str, tuple[float, float, float, float]] = {
    "left": (0.0, 0.0, 0.5, 1.0),
    "right": (0.5, 0.0, 0.5, 1.0),
    "top": (0.0, 0.0, 1.0, 0.5),
    "bottom": (0.0, 0.5, 1.0, 0.5),
    "centre": (0.25, 0.25, 0.5, 0.5),
    "center": (0.25, 0.25, 0.5, 0.5),
}
#: The names offered in pickers (a slash command's choices, a modal's menu): "center" is only an alias.
REGION_NAMES = ("left", "right", "top", "bottom", "centre")
ZOOM_FACTORS = (1.5, 2.0)
PAN_DIRECTIONS = ("left", "right", "up", "down")
PAN_SHIFT = 0.25
#: The smallest box side worth drawing (a sliver would be all edge).
MIN_BOX_SIDE = 0.05


class EditSpecError(UsageError):
    """An edit that cannot be drawn (the message says why, for the user)."""


@dataclass(frozen=True)
class EditSpec:
    op: str  # region | zoomout | pan
    box: tuple[float, float, float, float] | None = None
    factor: float | None = None
    direction: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EditSpec:
        box = data.get("box")
        return cls(data["op"], tuple(box) if box is not None else None, data.get("factor"), data.get("direction"))


def region_edit(region: str | None, box: str | None) -> EditSpec:
    """A region edit from a named region or a box X,Y,W,H, as forms and typed options give them
    (exactly one of the two)."""
    if (region is None) == (box is None):
        raise EditSpecError("Give either a region (left, right, …) or a box X,Y,W,H, not both.")
    return EditSpec("region", parse_region(box or region or ""))


def parse_region(text: str) -> tuple[float, float, float, float]:
    """`left` … `centre`, or `X,Y,W,H` as fractions of the image: the box to draw anew."""
    word = text.strip().lower()
    if word in REGIONS:
        return REGIONS[word]
    parts = [p for p in word.replace(";", ",").replace(" ", ",").split(",") if p]
    if len(parts) != 4:
        raise EditSpecError(
            f"A region is left, right, top, bottom, centre or X,Y,W,H (fractions, e.g. 0.5,0,0.5,1); got {text[:40]!r}."
        )
    try:
        x, y, w, h = (float(p) for p in parts)
    except ValueError:
        raise EditSpecError(f"X,Y,W,H must be four numbers from 0 to 1, got {text[:40]!r}.") from None
    return check_box((x, y, w, h))


def check_box(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    x, y, w, h = box
    if not all(math.isfinite(v) for v in box):
        raise EditSpecError("The region's numbers must be finite.")
    if w < MIN_BOX_SIDE or h < MIN_BOX_SIDE:
        raise EditSpecError(
            f"The region is empty or too thin ({w:g} × {h:g}); each side must be at "
            f"least {MIN_BOX_SIDE:g} of the image."
        )
    if x < 0 or y < 0 or x + w > 1 + 1e-9 or y + h > 1 + 1e-9:
        raise EditSpecError(
            f"The region {x:g},{y:g},{w:g},{h:g} goes outside the image (X+W and Y+H must stay within 1)."
        )
    if w * h > 1 - 1e-9:
        raise EditSpecError(
            "The region is the whole image: that is a new picture (/imagine), or a variation (/vary), not an edit."
        )
    return (x, y, w, h)


def check(spec: EditSpec) -> EditSpec:
    """`spec` if it can be drawn, else EditSpecError saying why."""
    if spec.op == "region":
        if spec.box is None:
            raise EditSpecError("An edit needs a region.")
        check_box(spec.box)
    elif spec.op == "zoomout":
        if spec.factor not in ZOOM_FACTORS:
            raise EditSpecError(f"Zoom out by {' or '.join(f'{f:g}' for f in ZOOM_FACTORS)}, got {spec.factor!r}.")
    elif spec.op == "pan":
        if spec.direction not in PAN_DIRECTIONS:
            raise EditSpecError(f"Pan {', '.join(PAN_DIRECTIONS)}; got {spec.direction!r}.")
    else:
        raise EditSpecError(f"unknown edit {spec.op!r}")
    return spec
