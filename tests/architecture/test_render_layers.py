"""engine.render's layers, laid out like diffusers' pipelines: types (plain data) ← base (what
every family shares) ← one module per family ← the factory that picks one.

The import graph is read from the source with `ast`, every import counted (those inside
functions and TYPE_CHECKING blocks too): a lazy import that closes a cycle is still a cycle, it
only fails later and further from its cause.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

from tests.architecture.test_imports import loaded_after

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "engine.render"
FAMILIES = f"{PACKAGE}.families"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def render_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / "engine" / "render").rglob("*.py"))}


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The engine.render modules `name` imports (`from package import module` included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = render_modules()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def family_modules(graph: dict[str, set[str]]) -> list[str]:
    return sorted(name for name in graph if name.startswith(f"{FAMILIES}."))


def test_the_graph_is_read():
    """Guard against a vacuous pass: the layers below are where the modules say they are."""
    graph = import_graph()
    assert family_modules(graph) == [f"{FAMILIES}.kandinsky", f"{FAMILIES}.unclip"]
    assert {f"{FAMILIES}.kandinsky", f"{FAMILIES}.unclip"} <= graph[f"{PACKAGE}.factory"]
    assert f"{PACKAGE}.types" in graph[f"{PACKAGE}.base"]


def test_no_import_cycles_inside_engine_render():
    graph = import_graph()
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle in engine.render: {' -> '.join(error.args[1])}")


@pytest.mark.parametrize("family", family_modules(import_graph()))
def test_families_build_on_the_base_only(family):
    """A family imports the base, never another family or the factory that chooses among them."""
    imports = import_graph()[family]
    assert f"{PACKAGE}.base" in imports
    forbidden = {m for m in imports if m.startswith(f"{FAMILIES}.") or m == f"{PACKAGE}.factory"}
    assert not forbidden, f"{family} imports {sorted(forbidden)}"


def test_the_loader_never_imports_the_tiny_model_builder():
    """The loader loads; engine.render.tiny builds test models (on the loader's settings)."""
    graph = import_graph()
    assert f"{PACKAGE}.tiny" not in graph[f"{PACKAGE}.loader"]


def test_one_aspect_table():
    """The render side's aspect ratios are base.ASPECT_RATIOS, named by the domain's ASPECTS."""
    from engine.domain.types import ASPECTS
    from engine.render.base import ASPECT_RATIOS

    assert tuple(ASPECT_RATIOS) == ASPECTS
    assert ASPECT_RATIOS["16:9"] == 16 / 9
    for name, path in render_modules().items():
        assert '"16:9"' not in path.read_text(), f"{name} has an aspect table of its own"


def test_types_and_the_noop_factory_path_import_no_torch():
    """The data types are safe anywhere; the benchmarks' no-op backend loads without torch."""
    assert "torch" not in loaded_after("import engine.render.types")
    loaded = loaded_after(
        "from engine.render.factory import load_renderer\n"
        "assert load_renderer('noop', '.', backend='noop').model_id == 'noop'"
    )
    assert "torch" not in loaded
