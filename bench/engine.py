"""The engine path against a direct diffusers pipeline call, and the worker's batching gain.

    python bench/engine.py [--model builtin] [--repeats 3] [--threads 2]

- batch_1 / batch_4 / batch_8: images/s of the engine's renderer (our unCLIP pipeline plus
  what the bot needs around it: per-image generators, the stored CLIP embedding of each
  picture, PNG metadata, the grid) against diffusers' own `UnCLIPPipeline` built from the very
  same loaded components, with the same dtype, steps, guidance and seeds. ratio = engine/direct.
- batching_gain_8_jobs: eight queued one-image jobs run through the worker's job body (real
  SQLite rows, real files) with batching off (max 1 image per call) and on (8): time off / on.

Prints {"batch_1": {"engine_img_s": a, "direct_img_s": b, "ratio": a/b}, "batch_4": {...},
"batch_8": {...}, "batching_gain_8_jobs": g}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def direct_pipeline(renderer):
    """diffusers' UnCLIPPipeline on the renderer's own modules (no copies)."""
    from diffusers import UnCLIPPipeline

    pipe = renderer.pipe
    direct = UnCLIPPipeline(
        prior=pipe.prior,
        decoder=pipe.decoder,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        text_proj=pipe.text_proj,
        super_res_first=pipe.super_res_first,
        super_res_last=pipe.super_res_last,
        prior_scheduler=pipe.prior_scheduler,
        decoder_scheduler=pipe.decoder_scheduler,
        super_res_scheduler=pipe.super_res_scheduler,
    )
    direct.set_progress_bar_config(disable=True)
    return direct


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def compare(renderer, batch: int, repeats: int) -> dict:
    import torch

    from engine.render.types import RenderJob

    settings = renderer.resolved_settings(RenderJob(0, "text2image", "", None, 0, 1))
    prompt = "a red star on a blue background"
    jobs = [
        RenderJob(i, "text2image", prompt, None, 1000 + 4 * i, min(4, batch - 4 * i)) for i in range((batch + 3) // 4)
    ]
    quiet = [lambda f, s: None] * len(jobs)
    direct = direct_pipeline(renderer)

    def engine_run():
        renderer.render_batch(jobs, quiet)

    def direct_run():
        seeds = [seed for job in jobs for seed in job.image_seeds()]
        direct(
            prompt=prompt,
            num_images_per_prompt=batch,
            generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
            prior_num_inference_steps=settings["prior_steps"],
            decoder_num_inference_steps=settings["decoder_steps"],
            super_res_num_inference_steps=settings["super_res_steps"],
            prior_guidance_scale=settings["prior_guidance"],
            decoder_guidance_scale=settings["decoder_guidance"],
        )

    engine_run()  # warm-up (allocator, kernels)
    direct_run()
    engine_s = best_time(engine_run, repeats)
    direct_s = best_time(direct_run, repeats)
    return {
        "engine_img_s": round(batch / engine_s, 3),
        "direct_img_s": round(batch / direct_s, 3),
        "ratio": round(direct_s / engine_s, 3),
    }


async def batching_gain(renderer, repeats: int) -> float:
    """Time for 8 queued one-image jobs through the worker, unbatched over batched."""
    from engine.domain.types import Actor, ImagineRequest, Platform, RenderParams
    from engine.image_files import ImageStore
    from engine.service import ImagineService, ServicePolicy
    from engine.store.db import Database
    from engine.store.migrate import upgrade
    from engine.worker.jobs import run_generation
    from engine.worker.runtime import WorkerRuntime

    class NoQueue:
        def enqueue(self, generation_id, task_id):
            return None

    timings = {1: [], 8: []}
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/bench.db"
        upgrade(url)
        db = Database(url)
        service = ImagineService(
            db, NoQueue(), ServicePolicy(default_model=renderer.model_id, default_daily_images=10**6)
        )
        actor = Actor(Platform.CONSOLE, "bench", "bench")
        for _ in range(repeats):
            for batch_images in (1, 8):
                ids = []
                for i in range(8):
                    request = ImagineRequest("a red star on a blue background", seed=i, params=RenderParams(n=1))
                    ids.append((await service.submit_imagine(actor, request)).generation.id)
                runtime = WorkerRuntime(
                    db=db,
                    store=ImageStore(Path(folder) / "images"),
                    publisher=_Quiet(),
                    renderer_factory=lambda: renderer,
                    max_batch_images=batch_images,
                )
                started = time.perf_counter()
                for job_id in ids:
                    await asyncio.to_thread(run_generation, runtime, job_id)
                timings[batch_images].append(time.perf_counter() - started)
        await db.dispose()
        db.sync_engine.dispose()
    return round(statistics.median(timings[1]) / statistics.median(timings[8]), 3)


class _Quiet:
    def publish(self, generation_id, status, progress):
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    from engine.render.factory import load_renderer

    renderer = load_renderer(args.model, Path("data"), device="cpu", dtype="float32", torch_threads=args.threads)
    result = {f"batch_{b}": compare(renderer, b, args.repeats) for b in (1, 4, 8)}
    result["batching_gain_8_jobs"] = asyncio.run(batching_gain(renderer, args.repeats))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
