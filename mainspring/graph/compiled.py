"""The compiled graph: validated, immutable, and able to say what runs next."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import msgspec

from ..errors import GraphError
from ..state import StateSchema
from .types import END, START, Retry, Send


class NodeSpec(msgspec.Struct):
    name: str
    fn: Callable[..., Any] | None
    is_async: bool
    wants_ctx: bool
    retry: Retry | None
    timeout: float | None
    blocking: bool = False  # a sync node that blocks: run it in a worker thread
    subgraph: CompiledGraph | None = None
    subgraph_input: Callable[[Any], Any] | None = None
    subgraph_output: Callable[[Any], Any] | None = None
    # A function with no timeout and no thread: the engine calls it in place (derived).
    inline: bool = False

    def __post_init__(self) -> None:
        self.inline = self.fn is not None and not (self.blocking or self.timeout)


class BranchSpec(msgspec.Struct, frozen=True):
    source: str
    router: Callable[..., Any]
    mapping: Mapping[Hashable, str] | None  # router result -> node; None: the result names nodes
    targets: tuple[str, ...] | None  # every node the router may lead to, if declared


class Join(msgspec.Struct, frozen=True):
    sources: frozenset[str]
    target: str
    key: str  # "a+b>c": the join's progress in the journal (RunFold.joins) goes by it


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
    def build(
        cls,
        schema: StateSchema[Any],
        nodes: Mapping[str, NodeSpec],
        edges: Sequence[tuple[tuple[str, ...], str]],
        branches: Sequence[BranchSpec],
        *,
        name: str,
        ref: str | None,
    ) -> CompiledGraph:
        """Validate and freeze a graph's parts (``Graph.compile`` calls this)."""
        self = object.__new__(cls)
        self.name = name
        self.ref = ref
        self.schema = schema
        self.nodes = MappingProxyType(dict(nodes))
        self.edges = tuple(edges)
        static: dict[str, list[str]] = {}
        joins: list[Join] = []
        for sources, target in edges:
            if len(sources) == 1:
                targets = static.setdefault(sources[0], [])
                if target not in targets:
                    targets.append(target)
            else:
                joins.append(
                    Join(frozenset(sources), target, "+".join(sorted(set(sources))) + ">" + target)
                )
        self.static = MappingProxyType({k: tuple(v) for k, v in static.items()})
        self.joins = tuple(joins)
        by_source: dict[str, list[BranchSpec]] = {}
        for b in branches:
            by_source.setdefault(b.source, []).append(b)
        self.branches = MappingProxyType({k: tuple(v) for k, v in by_source.items()})
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
        """The graph as a Mermaid flowchart (dashed arrows: a router's possible targets)."""
        from .mermaid import to_mermaid  # a diagram is asked for rarely; its regex costs at import

        return to_mermaid(self)

    def __repr__(self) -> str:
        return f"<CompiledGraph {self.name!r}: {len(self.nodes)} nodes>"


def _suggest(name: str, known: Mapping[str, Any] | Sequence[str]) -> str:
    import difflib  # only for an error's suggestion

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _validate(g: CompiledGraph) -> None:
    if not g.nodes:
        raise GraphError(f"graph {g.name!r} has no nodes; add one with @g.node")
    known = set(g.nodes)
    misnamed: list[str] = []

    def check_node(
        name: str, where: str, *, allow_end: bool = False, allow_start: bool = False
    ) -> None:
        if (allow_end and name == END) or (allow_start and name == START) or name in known:
            return
        misnamed.append(f"{where}: there is no node named {name!r}{_suggest(name, g.nodes)}")

    for sources, target in g.edges:
        for s in sources:
            check_node(s, f"edge {s!r} -> {target!r}", allow_start=True)
        check_node(target, f"edge {'+'.join(sources)!r} -> {target!r}", allow_end=True)
    for source, branches in g.branches.items():
        check_node(source, f"branch after {source!r}", allow_start=True)
        for b in branches:
            for t in b.targets or ():
                check_node(t, f"branch after {source!r}", allow_end=True)
    # Every problem of a kind is reported at once, so that fixing one does not merely
    # reveal the next; a misspelt name is fixed first, as it explains the dangling nodes.
    problems = misnamed or _connection_problems(g)
    if len(problems) == 1:
        raise GraphError(problems[0])
    if problems:
        listed = "; ".join(f"({i}) {problem}" for i, problem in enumerate(problems, 1))
        raise GraphError(f"graph {g.name!r} has {len(problems)} problems: {listed}")


def _connection_problems(g: CompiledGraph) -> list[str]:
    """What keeps the graph from running every node from START to END, one line each."""
    problems: list[str] = []
    has_entry = START in g.static or START in g.branches
    if not has_entry:
        first = next(iter(g.nodes))
        problems.append(
            f"graph {g.name!r} has no entry point; add g.edge(START, {first!r}) (or a branch from START)"
        )
    leads_out = {s for sources, _ in g.edges for s in sources} | set(g.branches)
    leads_in = {target for _, target in g.edges}
    leads_in.update(t for bs in g.branches.values() for b in bs for t in b.targets or ())
    # A router without declared targets may lead to any node.
    open_router = any(b.targets is None for bs in g.branches.values() for b in bs)
    isolated: set[str] = set()
    for name in g.nodes:
        if name in leads_out:
            continue
        if name in leads_in or open_router:
            problems.append(
                f"node {name!r} has no way out; add g.edge({name!r}, END), an edge to the next "
                "node, or a branch after it"
            )
        else:
            isolated.add(name)
            problems.append(
                f"node {name!r} has no edges: nothing leads to it and it has no way out; connect "
                f"it with g.edge(..., {name!r}) and g.edge({name!r}, ...) (or branches), or remove it"
            )
    if has_entry:
        reachable = _reachable(g)
        unreachable = [n for n in g.nodes if n not in reachable and n not in isolated]
        if len(unreachable) == 1:
            name = unreachable[0]
            problems.append(
                f"node {name!r} can never run: nothing leads to it from START; connect it "
                f"with g.edge(..., {name!r}) or a branch, or remove it"
            )
        elif unreachable:
            names = ", ".join(repr(n) for n in unreachable)
            problems.append(
                f"nodes {names} can never run: nothing leads to them from START; connect them "
                "with g.edge(..., NODE) or a branch, or remove them"
            )
    return problems


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
    import hashlib  # ~1.4 ms to import; a version is computed once per graph

    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
