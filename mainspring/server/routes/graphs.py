"""Routes: the graphs and agents the server serves, with their versions and their Mermaid."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from ...graph.compiled import CompiledGraph
from ..auth import Caller, require
from ..catalog import CatalogEntry
from ..context import server_state
from ..keys.protocol import Scope
from ..schemas import AUTH, GraphDetail, GraphList, errors

router = APIRouter(tags=["graphs"])

Reader = Annotated[Caller, Depends(require(Scope.READ))]


def summary(entry: CatalogEntry, graph: CompiledGraph) -> dict[str, Any]:
    return {
        "name": entry.name,
        "kind": entry.kind,
        "ref": entry.ref,
        "version": graph.fingerprint,
        "versions": list(entry.versions),
        "nodes": list(graph.nodes),
    }


def edges(graph: CompiledGraph) -> list[dict[str, str]]:
    """Every arrow: static edges (a join's sources each to its target), then each router's
    declared targets (a router that names no targets may lead to any node or the end)."""
    out: list[dict[str, str]] = []
    for sources, target in graph.edges:
        out.extend({"source": s, "target": target, "kind": "edge"} for s in sources)
    for source, branches in graph.branches.items():
        for branch in branches:
            targets = (
                list(dict.fromkeys(branch.mapping.values()))
                if branch.mapping is not None
                else list(branch.targets or ())
            )
            out.extend({"source": source, "target": t, "kind": "branch"} for t in targets)
    return out


@router.get(
    "/v1/graphs",
    response_model=GraphList,
    summary="The graphs and agents this server serves",
    responses=errors(*AUTH),
)
async def list_graphs(request: Request, caller: Reader) -> dict[str, Any]:
    catalog = server_state(request).catalog
    return {"graphs": [summary(entry, entry.latest) for entry in catalog]}


@router.get(
    "/v1/graphs/{name}",
    response_model=GraphDetail,
    summary="One graph (a version of it): nodes, edges and its Mermaid flowchart",
    responses=errors(*AUTH, 404),
)
async def get_graph(
    name: str,
    request: Request,
    caller: Reader,
    version: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    entry = server_state(request).catalog.get(name)
    graph = entry.version(version)
    return {**summary(entry, graph), "edges": edges(graph), "mermaid": graph.to_mermaid()}
