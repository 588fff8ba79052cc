"""bench/model_quality.py's own rendering paths draw with the settings the worker would use."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))


class RecordingPipe:
    """Stands in for the unCLIP pipeline: records its keyword arguments, returns grey images."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, prompts, generators, **kwargs):
        self.calls.append({"prompts": list(prompts), **kwargs})
        return SimpleNamespace(images=np.full((len(prompts), 8, 8, 3), 0.5))


@pytest.mark.parametrize("path", ["no_prior", "given_embeddings"])
def test_the_bench_paths_that_skip_the_worker_use_the_models_own_settings(path):
    """The no-prior baseline and the decode-given-embeddings path call the pipeline directly;
    they must pass every setting the worker passes for them — the upsampler's strength too (the
    built-in model's 0.5; left out, the pipeline's 1.0 redrew each image from noise)."""
    import model_quality

    settings = {"decoder_steps": 25, "super_res_steps": 10, "super_res_strength": 0.5, "decoder_guidance": 8.0}
    pipe = RecordingPipe()
    renderer = SimpleNamespace(pipe=pipe, resolved_settings=lambda job: dict(settings))
    prompts = ["a red star on a blue background", "a green ring on a white background"]
    if path == "no_prior":
        images = model_quality.render_without_prior(renderer, prompts, {}, seed=3)
    else:
        import torch

        images = model_quality.render_from_embeddings(renderer, prompts, torch.zeros(2, 4), {}, seed=3)
    assert len(images) == 2 and all(len(group) == model_quality.IMAGES_PER_PROMPT for group in images)
    (call,) = pipe.calls
    assert call["super_res_strength"] == 0.5
    assert call["decoder_num_inference_steps"] == 25 and call["super_res_num_inference_steps"] == 10
    assert call["decoder_guidance_scale"] == 8.0
    assert call["prompts"] == [p for p in prompts for _ in range(model_quality.IMAGES_PER_PROMPT)]
