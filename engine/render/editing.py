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
(no torch); what an edit may ask for is engine/domain/edits.py's to say.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from engine.domain.edits import PAN_SHIFT, EditSpec

#: How wide the mask's soft edge is, as a fraction of the image side.
FEATHER = 1 / 32


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
        keep[
            oy + round(y * placed_h) : oy + round((y + h) * placed_h),
            ox + round(x * placed_w) : ox + round((x + w) * placed_w),
        ] = 0.0
    elif spec.op == "zoomout":
        inner = picture.resize(
            (round(placed_w / spec.factor), round(placed_h / spec.factor)),  # type: ignore[operator]
            Image.Resampling.LANCZOS,
        )
        put(inner, (placed_w - inner.width) // 2, (placed_h - inner.height) // 2)
    else:
        dx, dy = {"left": (1, 0), "right": (-1, 0), "up": (0, 1), "down": (0, -1)}[spec.direction]  # type: ignore[index]
        shifted = picture.crop(
            (
                max(0, -round(dx * PAN_SHIFT * placed_w)),
                max(0, -round(dy * PAN_SHIFT * placed_h)),
                placed_w - max(0, round(dx * PAN_SHIFT * placed_w)),
                placed_h - max(0, round(dy * PAN_SHIFT * placed_h)),
            )
        )
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
        keep = (
            np.asarray(
                Image.fromarray((keep * 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR), dtype=np.float32
            )
            / 255
        )
    mask = keep[..., None]
    blended = np.asarray(canvas, dtype=np.float32) * mask + np.asarray(drawn.convert("RGB"), dtype=np.float32) * (
        1 - mask
    )
    return Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))
