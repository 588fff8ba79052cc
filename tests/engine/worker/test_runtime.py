"""engine/worker/runtime.py: the renderer a worker loads gets the configured speed-ups."""

from __future__ import annotations

from typing import Any

from engine.config import Settings
from engine.render.speedups import Speedups
from engine.worker.runtime import build_runtime


def test_the_worker_passes_the_speedup_settings_to_the_renderer(monkeypatch, tmp_path):
    monkeypatch.setenv("IMAGINE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("IMAGINE_RENDER_COMPILE", "true")
    monkeypatch.setenv("IMAGINE_RENDER_CUDA_GRAPHS", "1")
    monkeypatch.setenv("IMAGINE_RENDER_CHANNELS_LAST", "1")
    monkeypatch.setenv("IMAGINE_RENDER_MAX_BATCH_IMAGES", "32")
    calls: list[dict[str, Any]] = []
    warmed: list[int] = []

    class FakeRenderer:
        def warm_up(self, max_images: int) -> float:
            warmed.append(max_images)
            return 0.5

    renderer = FakeRenderer()

    def fake_load(model: str, data_dir: Any, **kwargs: Any) -> FakeRenderer:
        calls.append(kwargs)
        return renderer

    monkeypatch.setattr("engine.render.factory.load_renderer", fake_load)
    runtime = build_runtime(Settings())
    assert calls == []  # nothing loads until the first job
    assert runtime.renderer is renderer
    assert warmed == [32]  # compiled at load, for batches up to the configured size
    assert calls[0]["speedups"] == Speedups(
        compile="regional",
        cuda_graphs=True,
        channels_last=True,
        fuse_qkv=False,
        cache_dir=tmp_path / "compile-cache",
    )
    assert runtime.max_batch_images == 32
    runtime.db.close_sync()


def test_no_speedups_no_warm_up(monkeypatch, tmp_path):
    """Without speed-ups there is nothing to compile: the first job is the first render."""
    monkeypatch.setenv("IMAGINE_DATA_DIR", str(tmp_path))

    class FakeRenderer:
        def warm_up(self, max_images: int) -> float:
            raise AssertionError("warmed up with nothing to compile")

    monkeypatch.setattr("engine.render.factory.load_renderer", lambda *args, **kwargs: FakeRenderer())
    runtime = build_runtime(Settings())
    assert isinstance(runtime.renderer, FakeRenderer)
    runtime.db.close_sync()


def test_warm_up_renders_a_single_image_then_a_full_batch(tiny_renderer, monkeypatch):
    """Two batch shapes (after which dynamo compiles the batch dimension as symbolic)."""
    sizes: list[list[int]] = []
    render_batch = tiny_renderer.render_batch

    def spy(jobs, progress_fns):
        sizes.append([job.n for job in jobs])
        return render_batch(jobs, progress_fns)

    monkeypatch.setattr(tiny_renderer, "render_batch", spy)
    assert tiny_renderer.warm_up(8) > 0
    assert sizes == [[1], [4, 4]]
    sizes.clear()
    tiny_renderer.warm_up(1)
    assert sizes == [[1]]
