"""The model names that resolve without a folder or a Hugging Face id, and where their folders are.

Its own module so the loader (which resolves these names) and the code that makes the folders
(`engine.render.tiny` builds the tiny random model; `engine.render.factory` builds it the first
time it is named) share them while the loader never imports the builder: the loader only loads.
"""

from __future__ import annotations

from pathlib import Path

#: imagine-bot's own small model, committed to the repository.
BUILTIN_MODEL_NAME = "builtin"
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "builtin" / "weights"

#: The tiny random unCLIP stack (untrained), built under the data folder on first use.
TINY_MODEL_NAME = "tiny-random"


def tiny_model_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "models" / TINY_MODEL_NAME
