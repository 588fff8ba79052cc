"""Image files: PNG encoding with metadata, 2x2 grids, safe decoding of uploads, re-encoding
to fit a size limit. Pillow only (no torch), so bots and workers can both use it."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

from PIL import Image, PngImagePlugin

from engine.domain.errors import UsageError

GRID_GUTTER = 2


def encode_png(image: Image.Image, metadata: dict[str, Any] | None = None) -> bytes:
    """PNG bytes with each metadata item as a text chunk (values that are not str become JSON)."""
    info = PngImagePlugin.PngInfo()
    for key, value in (metadata or {}).items():
        info.add_text(key, value if isinstance(value, str) else json.dumps(value, sort_keys=True))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, optimize=False)
    return buffer.getvalue()


def png_metadata(data: bytes) -> dict[str, str]:
    with Image.open(io.BytesIO(data)) as image:
        return dict(image.text)  # type: ignore[attr-defined]


def make_grid(images: Sequence[Image.Image], metadata: dict[str, Any] | None = None) -> bytes:
    """Lay 1-4 images out as the bot shows them: 1 alone, 2 side by side, 3-4 as a 2x2 grid."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    width, height = images[0].size
    columns = 1 if len(images) == 1 else 2
    rows = 1 if len(images) <= 2 else 2
    grid = Image.new(
        "RGB",
        (columns * width + (columns - 1) * GRID_GUTTER, rows * height + (rows - 1) * GRID_GUTTER),
        (24, 24, 24),
    )
    for i, image in enumerate(images):
        row, column = divmod(i, columns)
        grid.paste(image.convert("RGB"), (column * (width + GRID_GUTTER), row * (height + GRID_GUTTER)))
    return encode_png(grid, metadata)


def make_strip(images: Sequence[Image.Image], metadata: dict[str, Any] | None = None) -> bytes:
    """Frames side by side, left to right: an interpolation strip."""
    width, height = images[0].size
    strip = Image.new("RGB", (len(images) * width + (len(images) - 1) * GRID_GUTTER, height), (24, 24, 24))
    for i, image in enumerate(images):
        strip.paste(image.convert("RGB"), (i * (width + GRID_GUTTER), 0))
    return encode_png(strip, metadata)


def decode_upload(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Open an uploaded image safely or raise UsageError saying what is wrong with it."""
    if len(data) > max_bytes:
        raise UsageError(f"That file is {_size(len(data))}; images up to {_size(max_bytes)} are accepted.")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            if width * height > max_pixels:
                raise UsageError(f"That image is {width}x{height} pixels; at most {max_pixels:,} pixels are accepted.")
            probe.verify()
        image = Image.open(io.BytesIO(data))
        image.load()
    except UsageError:
        raise
    except Image.DecompressionBombError as error:
        raise UsageError("That image expands to too many pixels to be safe to open.") from error
    except Exception as error:  # noqa: BLE001 - any decoder failure means "not an image we read"
        raise UsageError("That file is not an image imagine-bot can read (PNG, JPEG, WebP, GIF).") from error
    return image.convert("RGB")


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 1_000_000 else f"{count / 1000:.0f} KB"


def fit_within(data: bytes, max_bytes: int) -> bytes:
    """Re-encode a PNG (as smaller JPEG, then smaller sizes) until it fits `max_bytes`."""
    if len(data) <= max_bytes:
        return data
    with Image.open(io.BytesIO(data)) as source:
        image = source.convert("RGB")
    for scale in (1.0, 0.75, 0.5, 0.35, 0.25):
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        resized = image if scale == 1.0 else image.resize(size, Image.Resampling.LANCZOS)
        for quality in (90, 80, 65):
            buffer = io.BytesIO()
            resized.save(buffer, format="JPEG", quality=quality, optimize=True)
            if buffer.tell() <= max_bytes:
                return buffer.getvalue()
    raise ValueError(f"cannot fit the image into {max_bytes} bytes")
