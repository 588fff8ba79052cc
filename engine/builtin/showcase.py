"""Draw the README's pictures of the built-in model through the renderer users hit.

    python -m engine.builtin.showcase            # writes docs/images/builtin-*.png

builtin-grid.png: the 2×2 grid `UnCLIPRenderer` returns for "a red star on a blue background".
builtin-variations.png: the first image of that grid, then four variations of it made as the
worker makes them when someone reacts to an image: empty prompt, its stored CLIP image embedding
and its PNG, at the model's default variation strength (imagine.json).
builtin-phrasings.png: prompts phrased as people type them, one per held-out phrasing family
(engine/builtin/phrasings.py), one image each, with the prompt under it.
All are scaled up 4× with nearest-neighbour so the 64 px pixels stay honest.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent.parent
PROMPT = "a red star on a blue background"
SCALE = 4
#: One prompt per held-out phrasing family, as a chat user might type it.
PHRASED = (
    "draw a green square on blue",
    "yellow background with a purple heart",
    "just a nice white star on a black background thanks",
    "a red sqaure on a bleu backgorund",
    "red circle, cyan bg",
    "a triangle coloured orange on a green background",
    "there's a pink diamond and the background is blue",
    "one blue crescent on a yellow background",
)


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
    phrased = renderer.render_batch(
        [RenderJob(10 + i, "text2image", prompt, None, args.seed, 1) for i, prompt in enumerate(PHRASED)],
        [lambda *_: None] * len(PHRASED),
    )
    cell = size * SCALE
    sheet = Image.new("RGB", (4 * (cell + 8), 2 * (cell + 40)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for i, (prompt, done) in enumerate(zip(PHRASED, phrased, strict=True)):
        assert done is not None
        x, y = (i % 4) * (cell + 8), (i // 4) * (cell + 40)
        sheet.paste(_scaled(_open(done.images[0].png)), (x, y))
        # The prompt under its picture, five words a line.
        words = prompt.split()
        lines = [" ".join(words[j : j + 5]) for j in range(0, len(words), 5)]
        for k, line in enumerate(lines[:3]):
            draw.text((x + 2, y + cell + 2 + 12 * k), line, fill=(255, 255, 255))
    sheet.save(args.out / "builtin-phrasings.png")
    print(f"wrote builtin-grid.png, builtin-variations.png and builtin-phrasings.png to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
