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

    def fake_load(model: str, data_dir: Any, **kwargs: Any) -> str:
        calls.append(kwargs)
        return "renderer"

    monkeypatch.setattr("engine.render.factory.load_renderer", fake_load)
    runtime = build_runtime(Settings())
    assert calls == []  # nothing loads until the first job
    assert runtime.renderer == "renderer"
    assert calls[0]["speedups"] == Speedups(
        compile="regional",
        cuda_graphs=True,
        channels_last=True,
        fuse_qkv=False,
        cache_dir=tmp_path / "compile-cache",
    )
    assert runtime.max_batch_images == 32
    runtime.db.close_sync()
