"""engine/config.py: the render speed-up settings parse, keep the old on/off meaning, and refuse
what they cannot mean with the variable's name in the message."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from engine.config import RenderSettings, Settings


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        ("regional", "regional"),
        ("off", "off"),
        ("1", "regional"),
        ("true", "regional"),
        ("TRUE", "regional"),
        ("0", "off"),
        ("false", "off"),
        ("no", "off"),
    ],
)
def test_compile_modes_and_the_old_boolean(monkeypatch, value, mode):
    """IMAGINE_RENDER_COMPILE=1/true (the old on/off flag) now means the regional compile."""
    monkeypatch.setenv("IMAGINE_RENDER_COMPILE", value)
    assert RenderSettings().compile == mode


def test_speedups_are_off_by_default(monkeypatch, tmp_path):
    monkeypatch.setenv("IMAGINE_DATA_DIR", str(tmp_path))
    settings = Settings()
    render = settings.render
    assert (render.compile, render.cuda_graphs, render.channels_last, render.fuse_qkv) == ("off", False, False, False)
    assert settings.compile_cache_dir == tmp_path / "compile-cache"
    monkeypatch.setenv("IMAGINE_RENDER_COMPILE_CACHE_DIR", "/cache/inductor")
    assert Settings().compile_cache_dir == Path("/cache/inductor")


def test_speedup_flags_parse(monkeypatch):
    for name in ("CUDA_GRAPHS", "CHANNELS_LAST", "FUSE_QKV"):
        monkeypatch.setenv(f"IMAGINE_RENDER_{name}", "true")
    render = RenderSettings()
    assert render.cuda_graphs and render.channels_last and render.fuse_qkv


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("COMPILE", "max-autotune", "IMAGINE_RENDER_COMPILE must be off or regional"),
        ("CUDA_GRAPHS", "sometimes", "valid boolean"),
        ("MAX_BATCH_IMAGES", "0", "IMAGINE_RENDER_MAX_BATCH_IMAGES must be 1 to 32, not 0"),
        ("MAX_BATCH_IMAGES", "64", "IMAGINE_RENDER_MAX_BATCH_IMAGES must be 1 to 32, not 64"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(monkeypatch, name, value, message):
    monkeypatch.setenv(f"IMAGINE_RENDER_{name}", value)
    with pytest.raises(ValidationError, match=message):
        RenderSettings()


@pytest.mark.parametrize("images", [16, 32])
def test_larger_batches_are_allowed(monkeypatch, images):
    monkeypatch.setenv("IMAGINE_RENDER_MAX_BATCH_IMAGES", str(images))
    assert RenderSettings().max_batch_images == images
