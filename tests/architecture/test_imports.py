"""Layering rules, checked in fresh interpreters so nothing else has imported the modules."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "diffusers", "transformers")
PLATFORMS = ("discord", "slack_bolt", "slack_sdk")


def loaded_after(imports: str) -> set[str]:
    code = f"import sys, json\n{imports}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in json.loads(out.stdout.splitlines()[-1])}


@pytest.mark.parametrize(
    "module",
    [
        "bot",
        "bot.cli",
        "bot.commands",
        "bot.runner",
        "bot.delivery",
        "bot.runtime",
        "bot.console.adapter",
        "engine.worker.app",
        "engine.worker.queue",
    ],
)
def test_bot_side_never_imports_torch(module):
    """The bot side (and the Celery app the bot publishes through) leaves torch & co. out."""
    loaded = loaded_after(f"import {module}")
    assert not loaded & set(HEAVY), f"{module} pulled in {loaded & set(HEAVY)}"


@pytest.mark.parametrize("module", ["engine.domain.types", "engine.domain.quota", "engine.service"])
def test_core_imports_no_platform_celery_or_torch(module):
    """The domain and the service import no chat platform, Celery or torch module."""
    loaded = loaded_after(f"import {module}")
    forbidden = set(HEAVY) | set(PLATFORMS) | {"celery", "kombu"}
    assert not loaded & forbidden, f"{module} pulled in {loaded & forbidden}"


def test_render_package_is_lazy():
    """Importing engine.render (or its data types) does not import torch; the renderer base does."""
    assert "torch" not in loaded_after("import engine.render, engine.render.types")
    assert "torch" in loaded_after("import engine.render.base")
