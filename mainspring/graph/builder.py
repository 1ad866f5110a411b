"""Graph authoring: nodes, edges, branches; ``compile()`` validates and freezes.

g = Graph(Ticket)

@g.node
async def classify(s, ctx): ...

g.edge(START, "classify")
g.branch("classify", lambda s: s["intent"], {"refund": "refund", "other": END})
app = g.compile()
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Generic, TypeVar, overload

from ..errors import GraphError
from ..state import StateSchema
from .compiled import BranchSpec, CompiledGraph, NodeSpec
from .types import END, START, Retry

S = TypeVar("S")
F = TypeVar("F", bound=Callable[..., Any])


class Graph(Generic[S]):
    """A graph under construction. Nothing is checked until ``compile()``, which checks everything."""

    def __init__(self, state: type[S], *, name: str | None = None) -> None:
        self.schema: StateSchema[S] = StateSchema(state)
        self.name = name or state.__name__
        self.nodes: dict[str, NodeSpec] = {}
        self.edges: list[tuple[tuple[str, ...], str]] = []
        self.branches: list[BranchSpec] = []

    @overload
    def node(
        self,
        fn: F,
        /,
        *,
        name: str | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
        blocking: bool = False,
    ) -> F: ...
    @overload
    def node(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
        blocking: bool = False,
    ) -> Callable[[F], F]: ...
    @overload
    def node(
        self,
        name: str,
        fn: Callable[..., Any] | CompiledGraph,
        /,
        *,
        retry: Retry | None = None,
        timeout: float | None = None,
        blocking: bool = False,
        input: Callable[[Any], Any] | None = None,
        output: Callable[[Any], Any] | None = None,
    ) -> None: ...

    def node(self, *args: Any, **kwargs: Any) -> Any:
        """Add a node: ``@g.node``, ``@g.node(retry=..., timeout=...)``, ``g.node(fn, name=...)``
        or ``g.node("name", fn_or_subgraph)``.

        A node is ``fn(state)`` or ``fn(state, ctx)``, sync or async, and returns a
        dict of the fields to update (or None). A compiled graph as ``fn`` is a
        subgraph: it runs with its own state and journal; ``input`` maps the parent
        state to its input and ``output`` its result to the parent update (by
        default, the fields the two states share).
        """
        if len(args) == 2:
            name, target = args
            self._add(name, target, **kwargs)
            return None
        if len(args) == 1 and callable(args[0]):
            fn = args[0]
            name = kwargs.pop("name", None)
            self._add(name or _name_of(fn), fn, **kwargs)
            return fn
        if args:
            raise GraphError(
                "g.node takes a function, keyword options, or a name and a function; "
                f"got {len(args)} positional arguments"
            )
        name = kwargs.pop("name", None)

        def decorate(fn: F) -> F:
            self._add(name or _name_of(fn), fn, **kwargs)
            return fn

        return decorate

    def _add(
        self,
        name: str,
        target: Any,
        *,
        retry: Retry | None = None,
        timeout: float | None = None,
        blocking: bool = False,
        input: Callable[[Any], Any] | None = None,
        output: Callable[[Any], Any] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise GraphError(f"a node name must be a non-empty string, got {name!r}")
        if name in (START, END):
            raise GraphError(
                f"{name!r} is reserved for the graph's entry and exit; name the node otherwise"
            )
        if name in self.nodes:
            raise GraphError(f"node {name!r} is added twice; give each node a unique name")
        if timeout is not None and timeout <= 0:
            raise GraphError(
                f"node {name!r}: timeout must be a positive number of seconds, got {timeout!r}"
            )
        if retry is not None and not isinstance(retry, Retry):
            raise GraphError(
                f"node {name!r}: retry must be a Retry(...), got {type(retry).__name__}"
            )
        if isinstance(target, CompiledGraph):
            self.nodes[name] = NodeSpec(
                name, None, False, False, retry, timeout, False, target, input, output
            )
            return
        if not callable(target):
            raise GraphError(
                f"node {name!r} must be a function or a compiled graph, got {type(target).__name__}"
            )
        if input is not None or output is not None:
            raise GraphError(f"node {name!r}: input= and output= apply to subgraph nodes only")
        is_async = inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
            getattr(target, "__call__", None)  # noqa: B004 - callable objects with async __call__
        )
        if blocking and is_async:
            raise GraphError(f"node {name!r} is async; blocking=True is for sync functions only")
        self.nodes[name] = NodeSpec(
            name, target, is_async, _wants_ctx(name, target), retry, timeout, blocking
        )

    def edge(self, source: str | Sequence[str], target: str) -> None:
        """``target`` runs after ``source``; after *all* of them, for a list of sources (a join)."""
        sources = (source,) if isinstance(source, str) else tuple(source)
        if not sources:
            raise GraphError(f"edge to {target!r} has no source; name at least one node or START")
        if target == START:
            raise GraphError("an edge cannot lead to START; START is only a source")
        if END in sources:
            raise GraphError(
                f"an edge cannot start at END (edge to {target!r}); END is only a target"
            )
        if len(sources) > 1 and START in sources:
            raise GraphError(
                "START cannot be part of a join; add g.edge(START, node) for each entry"
            )
        self.edges.append((sources, target))

    def branch(
        self,
        source: str,
        router: Callable[..., Any],
        targets: Mapping[Hashable, str] | Sequence[str] | None = None,
    ) -> None:
        """After ``source``, call ``router(state)`` to choose the next node(s).

        The router returns a node name, END, a Send, or a list of those; with a
        ``targets`` mapping it returns keys of the mapping instead. Declaring the
        possible targets (a mapping or a list of names) lets ``compile()`` check
        them and the Mermaid diagram show them.
        """
        if source == END:
            raise GraphError("a branch cannot start at END")
        if not callable(router):
            raise GraphError(
                f"branch after {source!r}: the router must be callable, got {router!r}"
            )
        if isinstance(targets, Mapping):
            self.branches.append(
                BranchSpec(source, router, dict(targets), tuple(dict.fromkeys(targets.values())))
            )
        elif targets is not None:
            if isinstance(targets, str):
                raise GraphError(
                    f"branch after {source!r}: targets must be a list of node names or a mapping, not a string"
                )
            self.branches.append(BranchSpec(source, router, None, tuple(targets)))
        else:
            self.branches.append(BranchSpec(source, router, None, None))

    def compile(self, *, name: str | None = None, ref: str | None = None) -> CompiledGraph:
        """Validate the graph and freeze it; errors name the node and the fix.

        ``ref`` (``"module:attribute"``) lets another process (the CLI, a worker)
        import the graph to resume its runs.
        """
        return CompiledGraph.build(
            self.schema, self.nodes, self.edges, self.branches, name=name or self.name, ref=ref
        )


def _name_of(fn: Any) -> str:
    name = getattr(fn, "__name__", None)
    if not isinstance(name, str) or name == "<lambda>":
        raise GraphError(f"cannot name node {fn!r}; add it as g.node('name', fn)")
    return name


def _wants_ctx(name: str, fn: Callable[..., Any]) -> bool:
    try:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return False
    if not params:
        raise GraphError(f"node {name!r} takes no arguments; a node is fn(state) or fn(state, ctx)")
    if len(params) > 2 and all(p.default is inspect.Parameter.empty for p in params[2:]):
        raise GraphError(
            f"node {name!r} takes {len(params)} arguments; a node is fn(state) or fn(state, ctx)"
        )
    return len(params) >= 2
