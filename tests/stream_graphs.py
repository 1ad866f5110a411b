"""Graphs of the stream tests (importable by reference: the restart test's server loads them)."""

from __future__ import annotations

from typing import Any, TypedDict

import anyio

from mainspring import END, START, Context, Graph
from mainspring.models import Gateway, ScriptedModel


class Ticks(TypedDict, total=False):
    n: int
    limit: int
    delay: float


def build_ticker() -> Graph[Ticks]:
    """``limit`` steps, each sleeping ``delay`` seconds: a run that takes a while."""
    g = Graph(Ticks, name="ticker")

    @g.node
    async def tick(s: Ticks, ctx: Context) -> dict[str, Any]:
        await anyio.sleep(s.get("delay", 0.0))
        return {"n": s.get("n", 0) + 1}

    g.edge(START, "tick")
    g.branch(
        "tick", lambda s: "tick" if s.get("n", 0) < s["limit"] else END, {"tick": "tick", END: END}
    )
    return g


ticker = build_ticker().compile()


class Question(TypedDict, total=False):
    question: str
    delay: float
    answer: str
    approved: bool


def build_asker() -> Graph[Question]:
    """A model's streamed answer, then a park until someone approves it."""
    g = Graph(Question, name="asker")

    @g.node
    async def ask(s: Question, ctx: Context) -> dict[str, Any]:
        await anyio.sleep(s.get("delay", 0.0))  # time for a subscriber to join
        response = await ctx.model("fast", s["question"])
        approved = bool(await ctx.interrupt({"send": response.text}))
        return {"answer": response.text, "approved": approved}

    g.edge(START, "ask")
    g.edge("ask", END)
    return g


asker = build_asker().compile()

ANSWER = "the quick brown fox jumps over the lazy dog " * 4


def gateway(token_delay: float = 0.002) -> Gateway:
    return Gateway({"fast": ScriptedModel([ANSWER], chunk=4, token_delay=token_delay)})
