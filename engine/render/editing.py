"""Edits, zoom-outs and pans as one thing: a canvas with a known part and a part to draw.

- **region** (edit): the canvas is the source; the box (x, y, w, h as fractions of the image) is
  drawn anew from the prompt, everything else is kept;
- **zoomout**: the source, shrunk by the factor, in the middle of an empty canvas; the border is
  drawn (it continues the picture);
- **pan**: the source shifted by a quarter of its size away from the direction; the strip that
  opens on that side is drawn.

A sampler keeps the known part at every denoising step (RePaint: it is replaced by the source
noised to that step), and the finished picture is composited over the canvas through a mask
feathered at its edge, so outside the drawn part the picture is the source. Pure numpy and PIL
(no torch): the service validates edit specs with it, the families build canvases with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

REGIONS: dict[str, tuple[float, float, float, float]] = {
    "left": (0.0, 0.0, 0.5, 1.0),
    "right": (0.5, 0.0, 0.5, 1.0),
    "top": (0.0, 0.0, 1.0, 0.5),
    "bottom": (0.0, 0.5, 1.0, 0.5),
    "centre": (0.25, 0.25, 0.5, 0.5),
    "center": (0.25, 0.25, 0.5, 0.5),
}
ZOOM_FACTORS = (1.5, 2.0)
PAN_DIRECTIONS = ("left", "right", "up", "down")
PAN_SHIFT = 0.25
#: The smallest box side worth drawing (a sliver would be all edge).
MIN_BOX_SIDE = 0.05
#: How wide the mask's soft edge is, as a fraction of the image side.
FEATHER = 1 / 32


class EditSpecError(ValueError):
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


def parse_region(text: str) -> tuple[float, float, float, float]:
    """`left` … `centre`, or `X,Y,W,H` as fractions of the image: the box to draw anew."""
    word = text.strip().lower()
    if word in REGIONS:
        return REGIONS[word]
    parts = [p for p in word.replace(";", ",").replace(" ", ",").split(",") if p]
    if len(parts) != 4:
        raise EditSpecError(f"A region is left, right, top, bottom, centre or X,Y,W,H (fractions, "
                            f"e.g. 0.5,0,0.5,1); got {text[:40]!r}.")
    try:
        x, y, w, h = (float(p) for p in parts)
    except ValueError:
        raise EditSpecError(f"X,Y,W,H must be four numbers from 0 to 1, got {text[:40]!r}.") from None
    return check_box((x, y, w, h))


def check_box(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    x, y, w, h = box
    if not all(np.isfinite(v) for v in box):
        raise EditSpecError("The region's numbers must be finite.")
    if w < MIN_BOX_SIDE or h < MIN_BOX_SIDE:
        raise EditSpecError(f"The region is empty or too thin ({w:g} × {h:g}); each side must be at "
                            f"least {MIN_BOX_SIDE:g} of the image.")
    if x < 0 or y < 0 or x + w > 1 + 1e-9 or y + h > 1 + 1e-9:
        raise EditSpecError(f"The region {x:g},{y:g},{w:g},{h:g} goes outside the image (X+W and Y+H "
                            "must stay within 1).")
    if w * h > 1 - 1e-9:
        raise EditSpecError("The region is the whole image: that is a new picture (/imagine), or a "
                            "variation (/vary), not an edit.")
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


def canvas_and_mask(source: Image.Image, spec: EditSpec, size: tuple[int, int]) -> tuple[Image.Image, np.ndarray]:
    """(the canvas at `size`, the keep mask (H, W) in [0, 1]: 1 where the canvas is kept).

    A source of another shape than `size` is placed in the middle at its own aspect; the bands
    around it are drawn too (and cut away again when the result is cropped to that aspect)."""
    width, height = size
    source = source.convert("RGB")
    scale = min(width / source.width, height / source.height)
    placed_w, placed_h = round(source.width * scale), round(source.height * scale)
    ox, oy = (width - placed_w) // 2, (height - placed_h) // 2
    picture = source.resize((placed_w, placed_h), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (width, height), edge_colour(picture))
    keep = np.zeros((height, width), dtype=np.float32)

    def put(image: Image.Image, left: int, top: int) -> None:
        """Paste `image` at (left, top) within the placed area, and keep what lands there."""
        canvas.paste(image, (ox + left, oy + top))
        x0, y0 = max(0, ox + left), max(0, oy + top)
        x1, y1 = min(ox + placed_w, ox + left + image.width), min(oy + placed_h, oy + top + image.height)
        keep[y0:y1, x0:x1] = 1.0

    if spec.op == "region":
        put(picture, 0, 0)
        x, y, w, h = spec.box  # type: ignore[misc]
        keep[oy + round(y * placed_h):oy + round((y + h) * placed_h),
             ox + round(x * placed_w):ox + round((x + w) * placed_w)] = 0.0
    elif spec.op == "zoomout":
        inner = picture.resize((round(placed_w / spec.factor), round(placed_h / spec.factor)),  # type: ignore[operator]
                               Image.Resampling.LANCZOS)
        put(inner, (placed_w - inner.width) // 2, (placed_h - inner.height) // 2)
    else:
        dx, dy = {"left": (1, 0), "right": (-1, 0), "up": (0, 1), "down": (0, -1)}[spec.direction]  # type: ignore[index]
        shifted = picture.crop((max(0, -round(dx * PAN_SHIFT * placed_w)), max(0, -round(dy * PAN_SHIFT * placed_h)),
                                placed_w - max(0, round(dx * PAN_SHIFT * placed_w)),
                                placed_h - max(0, round(dy * PAN_SHIFT * placed_h))))
        put(shifted, max(0, round(dx * PAN_SHIFT * placed_w)), max(0, round(dy * PAN_SHIFT * placed_h)))
    return canvas, feather(keep)


def feather(keep: np.ndarray) -> np.ndarray:
    """Soften the mask's edge over FEATHER of the image, so the drawn part blends in. The soft
    edge lies in the drawn part: where the mask said keep, it still says keep, exactly."""
    height, width = keep.shape
    radius = max(1, round(FEATHER * max(height, width)))
    image = Image.fromarray((keep * 255).astype(np.uint8))
    grown = image.filter(ImageFilter.MaxFilter(2 * radius + 1))
    soft = np.asarray(grown.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32) / 255
    return np.maximum(keep, soft)


def edge_colour(picture: Image.Image) -> tuple[int, int, int]:
    """The mean colour of the picture's border: what an empty canvas is filled with."""
    array = np.asarray(picture, dtype=np.float32)
    border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
    return tuple(int(v) for v in border.mean(axis=0))  # type: ignore[return-value]


def composite(drawn: Image.Image, canvas: Image.Image, keep: np.ndarray) -> Image.Image:
    """The drawn picture where the mask says draw, the canvas where it says keep."""
    size = drawn.size
    if canvas.size != size:
        canvas = canvas.resize(size, Image.Resampling.LANCZOS)
    if keep.shape != (size[1], size[0]):
        keep = np.asarray(Image.fromarray((keep * 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR),
                          dtype=np.float32) / 255
    mask = keep[..., None]
    blended = np.asarray(canvas, dtype=np.float32) * mask + np.asarray(drawn.convert("RGB"), dtype=np.float32) * (1 - mask)
    return Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))
