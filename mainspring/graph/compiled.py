"""The compiled graph: validated, immutable, and able to say what runs next."""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..errors import GraphError
from ..state import StateSchema
from .types import END, START, Send

if TYPE_CHECKING:
    from .builder import BranchSpec, Graph, NodeSpec


@dataclass(frozen=True, slots=True)
class Join:
    sources: frozenset[str]
    target: str


class CompiledGraph:
    """An immutable, validated graph. Build it with ``Graph.compile()``."""

    __slots__ = (
        "branches",
        "edges",
        "fingerprint",
        "joins",
        "name",
        "nodes",
        "ref",
        "schema",
        "static",
    )

    name: str
    ref: str | None
    schema: StateSchema[Any]
    nodes: Mapping[str, NodeSpec]
    static: Mapping[str, tuple[str, ...]]  # single-source edges, START included
    joins: tuple[Join, ...]
    branches: Mapping[str, tuple[BranchSpec, ...]]
    edges: tuple[tuple[tuple[str, ...], str], ...]
    fingerprint: str

    @classmethod
    def build(cls, graph: Graph[Any], *, name: str, ref: str | None) -> CompiledGraph:
        self = object.__new__(cls)
        self.name = name
        self.ref = ref
        self.schema = graph.schema
        self.nodes = MappingProxyType(dict(graph.nodes))
        self.edges = tuple(graph.edges)
        static: dict[str, list[str]] = {}
        joins: list[Join] = []
        for sources, target in graph.edges:
            if len(sources) == 1:
                targets = static.setdefault(sources[0], [])
                if target not in targets:
                    targets.append(target)
            else:
                joins.append(Join(frozenset(sources), target))
        self.static = MappingProxyType({k: tuple(v) for k, v in static.items()})
        self.joins = tuple(joins)
        branches: dict[str, list[BranchSpec]] = {}
        for b in graph.branches:
            branches.setdefault(b.source, []).append(b)
        self.branches = MappingProxyType({k: tuple(v) for k, v in branches.items()})
        _validate(self)
        self.fingerprint = _fingerprint(self)
        return self

    # -- what runs next ------------------------------------------------------------

    def successors(self, node: str, state_view: Any) -> list[str | Send]:
        """Static targets then router results of ``node``, in declaration order."""
        out: list[str | Send] = list(self.static.get(node, ()))
        for branch in self.branches.get(node, ()):
            out.extend(self._route(branch, state_view))
        return out

    def _route(self, branch: BranchSpec, state_view: Any) -> list[str | Send]:
        try:
            result = branch.router(state_view)
        except Exception as exc:
            raise GraphError(
                f"the router after {branch.source!r} raised {type(exc).__name__}: {exc}"
            ) from exc
        items = result if isinstance(result, list | tuple) else [result]
        routed: list[str | Send] = []
        for item in items:
            if branch.mapping is not None and not isinstance(item, Send):
                if item not in branch.mapping:
                    keys = ", ".join(repr(k) for k in branch.mapping)
                    raise GraphError(
                        f"the router after {branch.source!r} returned {item!r}, which is not one of "
                        f"its targets ({keys}); return one of those keys"
                    )
                item = branch.mapping[item]
            if isinstance(item, Send):
                if item.node not in self.nodes:
                    raise GraphError(
                        f"the router after {branch.source!r} sent to unknown node {item.node!r}"
                        f"{_suggest(item.node, self.nodes)}"
                    )
            elif not isinstance(item, str) or (item != END and item not in self.nodes):
                raise GraphError(
                    f"the router after {branch.source!r} returned {item!r}; return a node name, END, "
                    f"a Send or a list of those{_suggest(str(item), self.nodes)}"
                )
            routed.append(item)
        return routed

    def to_mermaid(self) -> str:
        from .mermaid import to_mermaid

        return to_mermaid(self)

    def __repr__(self) -> str:
        return f"<CompiledGraph {self.name!r}: {len(self.nodes)} nodes>"


def _suggest(name: str, known: Mapping[str, Any] | Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _validate(g: CompiledGraph) -> None:
    if not g.nodes:
        raise GraphError(f"graph {g.name!r} has no nodes; add one with @g.node")
    known = set(g.nodes)

    def check_node(
        name: str, where: str, *, allow_end: bool = False, allow_start: bool = False
    ) -> None:
        if (allow_end and name == END) or (allow_start and name == START) or name in known:
            return
        raise GraphError(f"{where}: there is no node named {name!r}{_suggest(name, g.nodes)}")

    for sources, target in g.edges:
        for s in sources:
            check_node(s, f"edge {s!r} -> {target!r}", allow_start=True)
        check_node(target, f"edge {'+'.join(sources)!r} -> {target!r}", allow_end=True)
    for source, branches in g.branches.items():
        check_node(source, f"branch after {source!r}", allow_start=True)
        for b in branches:
            for t in b.targets or ():
                check_node(t, f"branch after {source!r}", allow_end=True)
    if START not in g.static and START not in g.branches:
        first = next(iter(g.nodes))
        raise GraphError(
            f"graph {g.name!r} has no entry point; add g.edge(START, {first!r}) (or a branch from START)"
        )
    join_sources = {s for j in g.joins for s in j.sources}
    for name in g.nodes:
        if name not in g.static and name not in g.branches and name not in join_sources:
            raise GraphError(
                f"node {name!r} has no way out; add g.edge({name!r}, END), an edge to the next node, "
                "or a branch after it"
            )
    unreachable = known - _reachable(g)
    if unreachable:
        name = sorted(unreachable)[0]
        more = f" (and {len(unreachable) - 1} more)" if len(unreachable) > 1 else ""
        raise GraphError(
            f"node {name!r}{more} can never run: nothing leads to it from START; connect it "
            f"with g.edge(..., {name!r}) or a branch, or remove it"
        )


def _reachable(g: CompiledGraph) -> set[str]:
    seen: set[str] = set()
    frontier = [START]
    while frontier:
        node = frontier.pop()
        nexts = list(g.static.get(node, ()))
        for b in g.branches.get(node, ()):
            # A router without declared targets may lead anywhere.
            nexts.extend(b.targets if b.targets is not None else g.nodes)
        for j in g.joins:
            if j.sources <= seen | {node}:
                nexts.append(j.target)
        for n in nexts:
            if n != END and n not in seen:
                seen.add(n)
                frontier.append(n)
        if not frontier:
            # A join may become reachable only once all its sources are.
            for j in g.joins:
                if j.target not in seen and j.sources <= seen:
                    seen.add(j.target)
                    frontier.append(j.target)
    return seen


def _fingerprint(g: CompiledGraph) -> str:
    """A short hash of the graph's shape, recorded with each run to spot changed graphs."""
    parts = [g.name, *sorted(g.nodes)]
    parts += [f"{'+'.join(sorted(s))}>{t}" for s, t in g.edges]
    parts += [
        f"{src}?{','.join(b.targets or ('*',))}" for src, bs in g.branches.items() for b in bs
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
