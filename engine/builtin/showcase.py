"""Draw the README's pictures of the built-in model through the renderer users hit.

    python -m engine.builtin.showcase            # writes docs/images/builtin-*.png

builtin-grid.png: the 2×2 grid `UnCLIPRenderer` returns for "a red star on a blue background".
builtin-variations.png: the first image of that grid, then four variations of it made as the
worker makes them when someone reacts to an image: empty prompt, its stored CLIP image embedding
and its PNG, at the model's default variation strength (imagine.json).
Both are scaled up 4× with nearest-neighbour so the 64 px pixels stay honest.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent.parent
PROMPT = "a red star on a blue background"
SCALE = 4


def _open(png: bytes) -> Image.Image:
    with Image.open(io.BytesIO(png)) as image:
        return image.convert("RGB")


def _scaled(image: Image.Image) -> Image.Image:
    return image.resize((image.width * SCALE, image.height * SCALE), Image.Resampling.NEAREST)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render the built-in model's README pictures.")
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--prompt", default=PROMPT)
    args = parser.parse_args(argv)

    from engine.render.factory import load_renderer
    from engine.render.types import RenderJob

    renderer = load_renderer(args.model, ROOT / "data", device="cpu")
    text_job = RenderJob(1, "text2image", args.prompt, None, args.seed, 4)
    result = renderer.render(text_job, lambda *_: None)
    args.out.mkdir(parents=True, exist_ok=True)
    assert result.grid_png is not None  # four images make a grid
    _scaled(_open(result.grid_png)).save(args.out / "builtin-grid.png")

    source = result.images[0]
    assert source.embedding is not None  # the unCLIP renderer returns each image's embedding
    variation_job = RenderJob(
        2, "variation", "", None, args.seed + 100, 4, source_embeddings=(source.embedding,), source_images=(source.png,)
    )
    variations = renderer.render(variation_job, lambda *_: None)
    pictures = [_open(source.png)] + [_open(image.png) for image in variations.images]
    gap = 2
    size = pictures[0].width
    # The source, a wider gap, then its variations.
    strip = Image.new("RGB", (5 * size + 5 * gap, size), (24, 24, 24))
    for i, picture in enumerate(pictures):
        strip.paste(picture, (i * (size + gap) + (2 * gap if i else 0), 0))
    strip = _scaled(strip)
    draw = ImageDraw.Draw(strip)
    draw.text((4, 2), "source", fill=(255, 255, 255))
    strip.save(args.out / "builtin-variations.png")
    print(f"wrote {args.out / 'builtin-grid.png'} and {args.out / 'builtin-variations.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
