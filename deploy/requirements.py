"""Print this project's requirements for the given extras, one per line, read from pyproject.toml.

    python deploy/requirements.py pyproject.toml discord slack postgres

The images install these before copying the code, so a code change does not reinstall every
dependency (Docker keeps the layer), and the bot image's list is checked to hold no torch.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """The base dependencies plus each extra's, in order, without duplicates."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise SystemExit(f"unknown extra(s) {unknown}; pyproject.toml has {sorted(optional)}")
    listed = list(project.get("dependencies", []))
    for extra in extras:
        listed += optional[extra]
    return list(dict.fromkeys(listed))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    print("\n".join(requirements(Path(sys.argv[1]), sys.argv[2:])))
