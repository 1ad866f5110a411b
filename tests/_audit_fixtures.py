"""Runs to tamper with: a small graph, a store filled with runs, and raw SQL helpers."""

from __future__ import annotations

from typing import Any, TypedDict

from mainspring import Runtime
from mainspring.graph import END, START, Graph


class S(TypedDict):
    k: str


def linear() -> Any:
    g = Graph(S)

    @g.node
    def a(s: S, ctx: Any) -> dict[str, str]:
        return {"k": s["k"] + "a"}

    @g.node
    def b(s: S, ctx: Any) -> dict[str, str]:
        return {"k": s["k"] + "b"}

    @g.node
    def c(s: S, ctx: Any) -> dict[str, str]:
        return {"k": s["k"] + "c"}

    g.edge(START, "a")
    g.edge("a", "b")
    g.edge("b", "c")
    g.edge("c", END)
    return g.compile()


async def fill(rt: Runtime, n: int = 3, **metadata: Any) -> list[str]:
    """``n`` finished runs; their ids in order."""
    app = linear()
    ids = []
    for i in range(n):
        handle = await rt.start(app, {"k": str(i)}, metadata=dict(metadata) or None)
        await handle.wait()
        ids.append(handle.run_id)
    return ids
