"""Graphs by name: the ones a runtime was given, and the ones a journal names by reference.

A run's journal records its graph's name and, when it was compiled with ``ref=``,
where to import it from (``module:attr``): a process that resumes a run it did not
start finds the graph here.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable

from ..errors import GraphError, RunStateError
from ..graph.builder import Graph
from ..graph.compiled import CompiledGraph

log = logging.getLogger("mainspring.runtime")


class GraphLoader:
    """The graphs a runtime knows, by name."""

    def __init__(self, graphs: Iterable[CompiledGraph] = ()) -> None:
        self._graphs: dict[str, CompiledGraph] = {}
        for graph in graphs:
            self.register(graph)

    def register(self, graph: CompiledGraph) -> None:
        """Make ``graph`` known so its runs can be resumed and recovered by name."""
        if not isinstance(graph, CompiledGraph):
            raise GraphError(
                f"expected a compiled graph (Graph.compile()), got {type(graph).__name__}"
            )
        known = self._graphs.get(graph.name)
        if known is not None and known is not graph and known.fingerprint != graph.fingerprint:
            log.warning("graph %r re-registered with a different shape", graph.name)
        self._graphs[graph.name] = graph

    def knows(self, graph: CompiledGraph) -> bool:
        return self._graphs.get(graph.name) is graph

    def known(self, run_id: str, name: str, graph: CompiledGraph | None) -> CompiledGraph | None:
        """The graph given (checked against the run's) or a registered one; None if neither,
        when only the run's recorded ref can tell."""
        if graph is not None:
            if graph.name != name:
                raise RunStateError(f"run {run_id!r} belongs to graph {name!r}, not {graph.name!r}")
            self.register(graph)
            return graph
        return self._graphs.get(name)

    def graph_for(
        self, run_id: str, name: str, ref: str | None, graph: CompiledGraph | None
    ) -> CompiledGraph:
        """The graph of run ``run_id``: the one given, a registered one, or its ref's."""
        known = self.known(run_id, name, graph)
        if known is not None:
            return known
        if ref:
            found = load_graph(ref)
            if found.name == name:
                self.register(found)
                return found
        raise RunStateError(
            f"run {run_id!r} belongs to graph {name!r}, which this runtime does not know; "
            "pass graph=... or register it with Runtime(graphs=[...])"
        )


def load_graph(ref: str) -> CompiledGraph:
    """Import ``module:attribute`` and return the compiled graph it names."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise GraphError(f"graph reference {ref!r} must look like 'package.module:graph'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise GraphError(f"cannot import module {module_name!r} for graph {ref!r}: {exc}") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise GraphError(f"module {module_name!r} has no attribute {attr!r}") from None
    if isinstance(obj, Graph):
        obj = obj.compile(ref=ref)
    elif not isinstance(obj, CompiledGraph) and isinstance(
        compiled := getattr(obj, "graph", None), CompiledGraph
    ):  # an object that compiles to a graph (an Agent): its graph
        obj = compiled
    if not isinstance(obj, CompiledGraph):
        raise GraphError(
            f"{ref!r} is an object of type {type(obj).__name__}, not a graph; "
            "point at a Graph, its compile(), or an Agent"
        )
    if obj.ref is None:
        obj.ref = ref
    return obj
