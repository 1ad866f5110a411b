"""Mermaid export: a pure function from a graph's shape to a flowchart string.

It reads only the shape (nodes, edges, routers), declared here as protocols, so that
the compiled graph can use it without the two knowing each other's modules.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from typing import Protocol

from .types import END, START


class _Node(Protocol):
    @property
    def subgraph(self) -> object | None: ...


class _Branch(Protocol):
    @property
    def mapping(self) -> Mapping[Hashable, str] | None: ...
    @property
    def targets(self) -> tuple[str, ...] | None: ...


class GraphShape(Protocol):
    @property
    def nodes(self) -> Mapping[str, _Node]: ...
    @property
    def edges(self) -> Sequence[tuple[tuple[str, ...], str]]: ...
    @property
    def branches(self) -> Mapping[str, Sequence[_Branch]]: ...


_SAFE = re.compile(r"[^0-9A-Za-z_]")


def _id(name: str) -> str:
    if name == START:
        return "__start__"
    if name == END:
        return "__end__"
    return "n_" + _SAFE.sub("_", name)


def _label(text: str) -> str:
    return text.replace('"', "#quot;")


def to_mermaid(graph: GraphShape) -> str:
    """Render ``graph`` as a Mermaid ``flowchart``; dashed arrows are branch targets."""
    lines = ["flowchart TD", f"    {_id(START)}([START])"]
    for name, spec in graph.nodes.items():
        shape = f'[["{_label(name)}"]]' if spec.subgraph is not None else f'["{_label(name)}"]'
        lines.append(f"    {_id(name)}{shape}")
    lines.append(f"    {_id(END)}([END])")
    for sources, target in graph.edges:
        if len(sources) == 1:
            lines.append(f"    {_id(sources[0])} --> {_id(target)}")
        else:
            join = (
                "join_"
                + "_".join(_SAFE.sub("_", s) for s in sorted(sources))
                + "__"
                + _SAFE.sub("_", target)
            )
            lines.append(f"    {join}(( ))")
            lines.extend(f"    {_id(s)} --> {join}" for s in sources)
            lines.append(f"    {join} --> {_id(target)}")
    for source, branches in graph.branches.items():
        for branch in branches:
            if branch.mapping is not None:
                for key, target in branch.mapping.items():
                    lines.append(f'    {_id(source)} -.->|"{_label(str(key))}"| {_id(target)}')
            elif branch.targets is not None:
                lines.extend(f"    {_id(source)} -.-> {_id(t)}" for t in branch.targets)
            else:
                lines.append(f'    {_id(source)} -.->|"router"| {_id(END)}')
    return "\n".join(lines) + "\n"
