"""Graphs of the client tests: ``approvals`` parks twice, so a stream has a quiet moment
(a park) at which the test can take the server down, and live events after it comes back."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from mainspring import END, START, Context, Graph, append


class Steps(TypedDict, total=False):
    text: str
    log: Annotated[list[str], append]


async def first(s: Steps, ctx: Context) -> dict[str, Any]:
    answer = await ctx.interrupt({"approve": "first"})
    return {"log": [f"first: {answer}"]}


async def second(s: Steps, ctx: Context) -> dict[str, Any]:
    answer = await ctx.interrupt({"approve": "second"})
    return {"log": [f"second: {answer}"]}


def done(s: Steps) -> dict[str, Any]:
    return {"log": ["done"]}


g = Graph(Steps, name="approvals")
g.node(first)
g.node(second)
g.node(done)
g.edge(START, "first")
g.edge("first", "second")
g.edge("second", "done")
g.edge("done", END)
approvals = g.compile()
