"""No module in bot/ or engine/ grows past MAX_LINES: past that, a module holds more than one
thing, and a newcomer cannot find what they look for by its file name.

The built-in model's training script is exempt (issue 20): a standalone program, not part of
the running bot, whose four stages are read as one recipe.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 500
EXEMPT = {Path("engine/builtin/train.py")}


def test_no_module_is_over_the_line_limit() -> None:
    sizes = {
        path.relative_to(ROOT): len(path.read_text(encoding="utf-8").splitlines())
        for package in ("bot", "engine")
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert len(sizes) > 50, "the source tree was not found"  # a wrong ROOT must not pass quietly
    too_long = {str(path): lines for path, lines in sizes.items() if lines > MAX_LINES and path not in EXEMPT}
    assert not too_long, f"over {MAX_LINES} lines (split along a real seam): {too_long}"
