"""Fixtures for the built-in model's tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def clip_probe():
    """bench/clip_probe.py as a module (bench/ is scripts, not a package)."""
    path = Path(__file__).resolve().parents[2] / "bench" / "clip_probe.py"
    spec = importlib.util.spec_from_file_location("clip_probe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
