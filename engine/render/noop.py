"""A renderer that draws nothing: solid 8x8 PNGs, instantly, without torch.

It exists only for the benchmarks that measure imagine-bot's own overhead (queueing, the
database, delivery) with the model's time taken out (bench/overhead.py and the chat ingress
benchmarks). Select it with IMAGINE_RENDER_BACKEND=noop; never use it for real users.
"""

from __future__ import annotations

from PIL import Image

from engine.images import encode_png, make_grid
from engine.render.jobs import ProgressFn, RenderedImage, RenderJob, RenderResult


class NoopRenderer:
    model_id = "noop"

    def render(self, job: RenderJob, progress: ProgressFn) -> RenderResult:
        info = {"model": "noop", "note": "benchmark renderer: no model ran"}
        images = []
        for index, seed in enumerate(job.image_seeds(), start=1):
            colour = (seed % 256, (seed >> 8) % 256, (seed >> 16) % 256)
            image = Image.new("RGB", (8, 8), colour)
            images.append(RenderedImage(index, encode_png(image, info), 8, 8, seed, None))
        progress(1.0, "done")
        grid = make_grid([Image.new("RGB", (8, 8))] * len(images)) if len(images) > 1 else None
        return RenderResult(images, grid, info)

    def render_batch(self, jobs, progress_fns):
        return [self.render(job, fn) for job, fn in zip(jobs, progress_fns, strict=True)]
