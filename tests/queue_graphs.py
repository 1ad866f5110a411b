"""Graphs of the queue and worker tests (imported by worker subprocesses by reference).

``steps``: three nodes, each a durable effect that records its execution in the table
``effect_log`` of the PostgreSQL schema named by ``MAINSPRING_EFFECT_URL`` (when set), so a
test sees every execution (a repeated effect would show twice). ``gated`` waits in its
second node until the file named by its input's ``gate`` exists (a test holds a run
mid-way, to kill or freeze its worker). ``asks`` parks on an interrupt, then finishes.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, TypedDict

import anyio
import asyncpg

from mainspring import END, START, Context, Graph, append


class Steps(TypedDict, total=False):
    n: int
    gate: str
    log: Annotated[list[str], append]


EFFECT_TABLES = """
CREATE TABLE IF NOT EXISTS "{schema}".effect_attempts (
  run_id text, step text, pid int, at float8 DEFAULT extract(epoch FROM clock_timestamp()));
CREATE TABLE IF NOT EXISTS "{schema}".effect_log (key text PRIMARY KEY, run_id text, step text,
                                                  pid int)
"""


async def _record(run_id: str, step: str, idempotency_key: str | None = None) -> str:
    """The effect: one row per execution in effect_attempts; the effect itself once per
    idempotency key in effect_log (as a service honouring keys would)."""
    url = os.environ.get("MAINSPRING_EFFECT_URL")
    if url:
        base, _, schema = url.partition("#")
        conn = await asyncpg.connect(base)
        try:
            async with conn.transaction():
                await conn.execute(
                    f'INSERT INTO "{schema}".effect_attempts VALUES ($1, $2, $3)',
                    run_id, step, os.getpid(),
                )  # fmt: skip
                await conn.execute(
                    f'INSERT INTO "{schema}".effect_log VALUES ($1, $2, $3, $4)'
                    " ON CONFLICT (key) DO NOTHING",
                    idempotency_key, run_id, step, os.getpid(),
                )  # fmt: skip
        finally:
            await conn.close()
    return f"{step}@{os.getpid()}"


def _node(step: str) -> Any:
    async def node(s: Steps, ctx: Context) -> dict[str, Any]:
        if step == "b" and s.get("gate"):
            while not os.path.exists(s["gate"]):
                await anyio.sleep(0.02)
        done = await ctx.step(f"effect-{step}", _record, ctx.run_id, step)
        return {"log": [done]}

    node.__name__ = step
    return node


g = Graph(Steps, name="steps")
for name in ("a", "b", "c"):
    g.node(_node(name))
g.edge(START, "a")
g.edge("a", "b")
g.edge("b", "c")
g.edge("c", END)
steps = g.compile()


async def ask(s: Steps, ctx: Context) -> dict[str, Any]:
    answer = await ctx.interrupt({"question": "go on?"})
    return {"log": [f"answer: {answer}"]}


a = Graph(Steps, name="asks")
a.node(ask)
a.edge(START, "ask")
a.edge("ask", END)
asks = a.compile()
