"""No import cycles among the modules of bot/ and engine/.

A cycle is two modules that each need the other, directly or through others: neither can be
read, tested or moved alone, and which one runs first at import time decides what works. The
fix is to move the piece both need down a layer. Imports made only for type checking
(`if TYPE_CHECKING:`) are left out: they never run, so they order nothing.
"""

from __future__ import annotations

import grimp
import pytest

PACKAGES = ("bot", "engine")


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Each cycle once, as the modules along it: [a, b, ..., a].

    An import a -> b closes a cycle when b reaches a again; the shortest way back is the cycle
    shown. Cycles through the same modules are reported once.
    """
    cycles: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is None:
                continue
            cycle = [importer, *back]
            if frozenset(cycle) not in seen:
                seen.add(frozenset(cycle))
                cycles.append(cycle)
    return cycles


def project_graph() -> grimp.ImportGraph:
    # cache_dir=None: a test leaves no cache folder in the working tree.
    return grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True, cache_dir=None)


def test_bot_and_engine_have_no_import_cycles() -> None:
    cycles = import_cycles(project_graph())
    assert not cycles, "import cycles (move what both sides need down a layer):\n" + "\n".join(
        " -> ".join(cycle) for cycle in cycles
    )


@pytest.mark.parametrize(
    ("imports", "expected"),
    [
        ([("p.a", "p.b"), ("p.b", "p.c")], []),
        ([("p.a", "p.b"), ("p.b", "p.a")], [["p.a", "p.b", "p.a"]]),
        ([("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")], [["p.a", "p.b", "p.c", "p.a"]]),
    ],
)
def test_the_cycle_finder_finds_cycles(imports: list[tuple[str, str]], expected: list[list[str]]) -> None:
    """The check itself: a chain is no cycle; a loop, direct or through a third module, is one."""
    graph = grimp.ImportGraph()
    for importer, imported in imports:
        graph.add_import(importer=importer, imported=imported)
    assert import_cycles(graph) == expected
