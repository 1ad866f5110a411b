"""The graphs and agents a server offers, by name, with every version it has seen.

Registered by ``module:attr`` (a ``CompiledGraph``, an ``Agent``, or a function returning
one) or as objects. A graph's version is its fingerprint (a hash of its shape, recorded
with each run); the catalog keeps the versions registered in this process, newest last,
so a run of an older version can still be drawn and continued while that code is loaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..engine.loader import load_graph
from ..errors import MainspringError
from ..graph.compiled import CompiledGraph


class UnknownGraphError(MainspringError, LookupError):
    """No graph of that name (or version) is registered with the server."""


@dataclass(slots=True)
class CatalogEntry:
    """One name: its versions (fingerprint -> graph), the newest last, and the agent."""

    name: str
    ref: str | None
    kind: str  # "graph" or "agent"
    versions: dict[str, CompiledGraph] = field(default_factory=dict)
    agent: Any = None  # the mainspring.Agent, for kind "agent"

    @property
    def latest(self) -> CompiledGraph:
        return next(reversed(self.versions.values()))

    def version(self, version: str | None) -> CompiledGraph:
        if version is None:
            return self.latest
        try:
            return self.versions[version]
        except KeyError:
            known = ", ".join(self.versions)
            raise UnknownGraphError(
                f"graph {self.name!r} has no version {version!r}; known: {known}"
            ) from None


class GraphCatalog:
    """Name -> :class:`CatalogEntry`; see the module's docstring."""

    def __init__(self, items: Iterable[object] = ()) -> None:
        self._entries: dict[str, CatalogEntry] = {}
        for item in items:
            self.add(item)

    def add(self, item: object, *, ref: str | None = None) -> CatalogEntry:
        """Register a graph, an agent, or the ``module:attr`` naming one."""
        if isinstance(item, str):
            ref = item
            item = _import(item)
        agent = None
        if isinstance(item, CompiledGraph):
            graph = item
        elif hasattr(item, "graph") and isinstance(getattr(item, "graph", None), CompiledGraph):
            agent, graph = item, item.graph  # a mainspring.Agent
        else:
            raise UnknownGraphError(
                f"{ref or item!r} is not a compiled graph or an agent; give MODULE:ATTR of a "
                "graph.compile() result or a mainspring.Agent"
            )
        entry = self._entries.get(graph.name)
        if entry is None:
            kind = "agent" if agent is not None else "graph"
            entry = self._entries[graph.name] = CatalogEntry(
                graph.name, ref or graph.ref, kind, agent=agent
            )
        entry.versions.pop(graph.fingerprint, None)
        entry.versions[graph.fingerprint] = graph
        if agent is not None:
            entry.agent = agent
        return entry

    def get(self, name: str) -> CatalogEntry:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise UnknownGraphError(
                f"no graph named {name!r} is served; registered: {known}"
            ) from None

    def graph(self, name: str, version: str | None = None) -> CompiledGraph:
        return self.get(name).version(version)

    def find(self, name: str, fingerprint: str | None) -> CompiledGraph | None:
        """The graph a run recorded (by name and version), if this server has it."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        if fingerprint is not None and fingerprint in entry.versions:
            return entry.versions[fingerprint]
        return entry.latest

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def graphs(self) -> list[CompiledGraph]:
        return [g for e in self._entries.values() for g in e.versions.values()]


def _import(ref: str) -> object:
    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise UnknownGraphError(f"{ref!r}: give MODULE:ATTR, e.g. myapp.agents:support")
    import importlib
    import os
    import sys

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise UnknownGraphError(f"{ref}: cannot import it ({exc})") from None
    if callable(found) and not isinstance(found, CompiledGraph) and not hasattr(found, "graph"):
        found = found()
    return found


__all__ = ["CatalogEntry", "GraphCatalog", "UnknownGraphError", "load_graph"]
