"""Graphs of the queue and worker tests (imported by worker subprocesses by reference).

``steps``: three nodes, each a durable effect that records its execution in the table
``effect_log`` of the PostgreSQL schema named by ``MAINSPRING_EFFECT_URL`` (when set), so a
test sees every execution (a repeated effect would show twice). ``gated`` waits in its
second node until the file named by its input's ``gate`` exists (a test holds a run
mid-way, to kill or freeze its worker). ``asks`` parks on an interrupt, then finishes.
``steps_retried`` is ``steps`` whose nodes retry a failed effect (the same idempotency
keys), for tests that restart the server the effects write to. ``steps_held`` is ``steps`` whose effect ``b`` itself waits for the gate, once it has
recorded its execution (a worker killed there dies inside an effect). ``dies`` kills the process driving it (``os._exit(1)``) every time, after recording the
attempt in ``effect_attempts``: a poisoned run.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, TypedDict

import anyio
import asyncpg

from mainspring import END, START, Context, Graph, Retry, append


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

r = Graph(Steps, name="steps_retried")
for name in ("a", "b", "c"):
    r.node(_node(name), retry=Retry(attempts=30, backoff=0.1, max_backoff=1.0))
r.edge(START, "a")
r.edge("a", "b")
r.edge("b", "c")
r.edge("c", END)
steps_retried = r.compile()


async def _record_then_wait(
    run_id: str, step: str, gate: str, idempotency_key: str | None = None
) -> str:
    done = await _record(run_id, step, idempotency_key)
    while not os.path.exists(gate):
        await anyio.sleep(0.02)
    return done


async def held_b(s: Steps, ctx: Context) -> dict[str, Any]:
    done = await ctx.step("effect-b", _record_then_wait, ctx.run_id, "b", s["gate"])
    return {"log": [done]}


h = Graph(Steps, name="steps_held")
h.node(_node("a"))
h.node(held_b, name="b")
h.node(_node("c"))
h.edge(START, "a")
h.edge("a", "b")
h.edge("b", "c")
h.edge("c", END)
steps_held = h.compile()


async def ask(s: Steps, ctx: Context) -> dict[str, Any]:
    answer = await ctx.interrupt({"question": "go on?"})
    return {"log": [f"answer: {answer}"]}


a = Graph(Steps, name="asks")
a.node(ask)
a.edge(START, "ask")
a.edge("ask", END)
asks = a.compile()


async def _attempt(run_id: str, step: str) -> None:
    """One row in effect_attempts, nothing in effect_log (not an effect: a death)."""
    url = os.environ.get("MAINSPRING_EFFECT_URL")
    if url:
        base, _, schema = url.partition("#")
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(
                f'INSERT INTO "{schema}".effect_attempts VALUES ($1, $2, $3)',
                run_id, step, os.getpid(),
            )  # fmt: skip
        finally:
            await conn.close()


async def boom(s: Steps, ctx: Context) -> dict[str, Any]:
    await _attempt(ctx.run_id, "boom")
    os._exit(1)  # the worker dies with the run in hand, every time


d = Graph(Steps, name="dies")
d.node(boom)
d.edge(START, "boom")
d.edge("boom", END)
dies = d.compile()
