"""Lineage trees, shared by the actor's `thread` and the gallery's."""

from __future__ import annotations

from engine.domain.views import GenerationView, ThreadNode


def build_thread_tree(root_id: int, members: list[GenerationView]) -> ThreadNode:
    """Arrange a lineage's jobs as a tree: each job hangs under the job its parent image is from."""
    by_id = {m.id: m for m in members}
    children: dict[int, list[GenerationView]] = {m.id: [] for m in members}
    for member in members:
        if member.id == root_id:
            continue
        parent = member.parent_generation_id
        if parent is None and "reroll_of" in member.params:
            parent = member.params["reroll_of"]
        children[parent if parent in by_id else root_id].append(member)

    def node(view: GenerationView) -> ThreadNode:
        return ThreadNode(view, tuple(node(c) for c in sorted(children[view.id], key=lambda v: v.id)))

    return node(by_id[root_id])
