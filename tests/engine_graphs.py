"""Graphs shared by the engine tests (importable by reference for cross-runtime resumes)."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

import anyio

from mainspring import END, START, Context, Graph, Retry, Send, append

CALLS: dict[str, int] = {}


def count(name: str) -> int:
    CALLS[name] = CALLS.get(name, 0) + 1
    return CALLS[name]


class Ticket(TypedDict, total=False):
    text: str
    intent: str
    amount: int
    approved: bool
    replies: Annotated[list[str], append]


def build_support() -> Graph[Ticket]:
    g = Graph(Ticket, name="support")

    @g.node
    async def classify(s: Ticket, ctx: Context) -> dict[str, Any]:
        intent = await ctx.step(
            "router", lambda text: "refund" if "refund" in text else "other", s["text"]
        )
        return {"intent": intent}

    @g.node
    async def refund(s: Ticket, ctx: Context) -> dict[str, Any]:
        amount = await ctx.step("orders.lookup", _lookup, s["text"])
        approved = True
        if amount > 100:
            approved = bool(await ctx.interrupt({"approve": amount}))
        return {
            "amount": amount,
            "approved": approved,
            "replies": ["refund issued" if approved else "refund denied"],
        }

    @g.node
    def other(s: Ticket) -> dict[str, Any]:
        return {"replies": ["noted"]}

    g.edge(START, "classify")
    g.branch("classify", lambda s: s["intent"], {"refund": "refund", "other": "other"})
    g.edge("refund", END)
    g.edge("other", END)
    return g


def _lookup(text: str, idempotency_key: str) -> int:
    count(f"lookup:{idempotency_key}")
    return 150 if "big" in text else 40


support = build_support().compile(ref="tests.engine_graphs:support")


class Fan(TypedDict, total=False):
    n: int
    results: Annotated[list[int], append]
    total: int


def build_fanout() -> Graph[Fan]:
    g = Graph(Fan, name="fanout")

    @g.node
    def plan(s: Fan) -> None:
        return None

    @g.node
    async def work(arg: dict[str, int]) -> dict[str, Any]:
        # later items finish first: the join must still be in Send order
        await anyio.sleep(0.001 * (10 - arg["i"]))
        return {"results": [arg["i"] * 10]}

    @g.node
    def total(s: Fan) -> dict[str, Any]:
        return {"total": sum(s["results"])}

    g.edge(START, "plan")
    g.branch("plan", lambda s: [Send("work", {"i": i}) for i in range(s["n"])], ["work"])
    g.edge("work", "total")
    g.edge("total", END)
    return g


fanout = build_fanout().compile(ref="tests.engine_graphs:fanout")


class Approvals(TypedDict, total=False):
    answers: Annotated[list[str], append]


def build_parallel_approvals() -> Graph[Approvals]:
    g = Graph(Approvals, name="approvals")

    async def ask(who: str, ctx: Context) -> dict[str, Any]:
        answer = await ctx.interrupt({"ask": who})
        return {"answers": [f"{who}:{answer}"]}

    g.node("legal", lambda s, ctx: ask("legal", ctx))
    g.node("finance", lambda s, ctx: ask("finance", ctx))
    g.edge(START, "legal")
    g.edge(START, "finance")
    g.edge("legal", END)
    g.edge("finance", END)
    return g


approvals = build_parallel_approvals().compile(ref="tests.engine_graphs:approvals")


class Flaky(TypedDict, total=False):
    key: str
    tries: int
    done: bool


def build_flaky(fail_times: int, attempts: int = 3) -> Graph[Flaky]:
    g = Graph(Flaky, name=f"flaky{fail_times}")

    @g.node(retry=Retry(attempts=attempts, backoff=0.001, on=(ConnectionError,)))
    async def call(s: Flaky, ctx: Context) -> dict[str, Any]:
        await ctx.step("prepare", count, f"prepare:{s['key']}")
        n = count(f"call:{s['key']}")
        if n <= fail_times:
            raise ConnectionError(f"flaky #{n}")
        return {"tries": n, "done": True}

    g.edge(START, "call")
    g.edge("call", END)
    return g
