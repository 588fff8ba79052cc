"""A renderer that draws nothing: solid 8x8 PNGs, without torch.

It exists only for the benchmarks that measure imagine-bot's own overhead (queueing, the
database, delivery) with the model's time taken out (bench/overhead.py and the chat ingress
benchmarks), and for the chaos benchmark, which needs renders that take a while
(`IMAGINE_RENDER_NOOP_DELAY_MS=300-2000`: each job sleeps a time drawn from its seed, reporting
progress on the way like a real render). Select it with IMAGINE_RENDER_BACKEND=noop; never use it
for real users.
"""

from __future__ import annotations

import time

from PIL import Image

from engine.images import encode_png, make_grid
from engine.render.types import ProgressFn, RenderAborted, RenderedImage, RenderJob, RenderResult

PROGRESS_EVERY_S = 0.1


def parse_delay(text: str) -> tuple[int, int]:
    """`"300-2000"` → (300, 2000) milliseconds; `"500"` → (500, 500); `""` → (0, 0)."""
    text = text.strip()
    if not text:
        return 0, 0
    low, _, high = text.partition("-")
    bounds = int(low), int(high or low)
    if bounds[0] < 0 or bounds[1] < bounds[0]:
        raise ValueError(f"a no-op delay is 'MS' or 'MIN-MAX' milliseconds, got {text!r}")
    return bounds


class NoopRenderer:
    model_id = "noop"

    def __init__(self, delay_ms: tuple[int, int] = (0, 0)) -> None:
        self.delay_ms = delay_ms

    def delay_s(self, job: RenderJob) -> float:
        """How long this job "renders": the same for the same seed, whichever worker runs it."""
        low, high = self.delay_ms
        return (low + (job.seed * 2654435761) % (high - low + 1)) / 1000

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

    def render_batch(self, jobs: list[RenderJob], progress_fns: list[ProgressFn]) -> list[RenderResult | None]:
        """Sleep the longest job's delay (one batch, one call), then draw every job that is
        still wanted; a job whose progress callback aborts it gets None, as in the real one."""
        aborted = [False] * len(jobs)
        total = max((self.delay_s(job) for job in jobs), default=0.0)
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < total:
            time.sleep(min(PROGRESS_EVERY_S, total - elapsed))
            for i, fn in enumerate(progress_fns):
                if not aborted[i]:
                    try:
                        fn(min(0.99, (time.monotonic() - started) / total), "noop")
                    except RenderAborted:
                        aborted[i] = True
            if all(aborted):
                raise RenderAborted()
        return [
            None if aborted[i] else self.render(job, fn)
            for i, (job, fn) in enumerate(zip(jobs, progress_fns, strict=True))
        ]
