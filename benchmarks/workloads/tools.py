"""W11: what the tool layer costs per call (issue 12's target: <= 30 us in memory).

Three graphs of ten async nodes in a line, on the memory store, sampled in
interleaved rounds:

* ``bare``: each node awaits a trivial async function itself;
* ``off``: each node calls the same function as a tool, ``await ctx.tool("plain", q=...)``:
  the effect gate, argument and result validation, the timeout, two journal records;
* ``on``: the same tool with a circuit breaker, a token bucket (too generous to wait)
  and a concurrency limit, on the default in-memory limits backend.

Reported: ``on`` - ``bare`` per call (the tool layer with every limit) against
``off`` - ``bare`` (with none), and what the limits add on their own,
``Resilience.call`` timed outside a run (``resilience_on_us`` - ``resilience_off_us``).
"""

from __future__ import annotations

from typing import Any

from mainspring import END, START, CompiledGraph, Context, Graph, Runtime
from mainspring.tools import Tool, Toolbox, ToolContext
from mainspring.tools.breaker import Breaker

from graphs import LINEAR_STEPS, Linear
from harness import US, Result, Settings, at_most, interleave, per_call_async

INPUT = {"k": "a"}
DONE = {"k": "a"}


async def echo(q: str) -> str:
    return q


def tool_chain(name: str, tool: str | None) -> CompiledGraph:
    """Ten linear nodes, each calling ``tool`` through ``ctx.tool`` (None: ``echo`` bare)."""

    async def bare(s: Any) -> dict[str, str]:
        return {"k": await echo(s["k"])}

    async def call(s: Any, ctx: Context) -> dict[str, str]:
        return {"k": await ctx.tool(tool or "", q=s["k"])}

    g = Graph(Linear)
    previous = START
    for i in range(LINEAR_STEPS):
        g.node(f"n{i}", bare if tool is None else call)
        g.edge(previous, f"n{i}")
        previous = f"n{i}"
    g.edge(previous, END)
    return g.compile(name=name)


def toolbox() -> Toolbox:
    plain = Tool(echo, name="plain")
    guarded = Tool(echo, name="guarded", breaker=Breaker(), rate=1e9, burst=10**9, concurrency=1000)
    return Toolbox([plain, guarded])


async def run(settings: Settings) -> list[Result]:
    box = toolbox()
    bare, off, on = (
        tool_chain("bare", None),
        tool_chain("off", "plain"),
        tool_chain("on", "guarded"),
    )
    calls = settings.pick(200, 500)
    async with Runtime.open("memory://", tools=box) as rt:
        for app in (bare, off, on):
            assert await rt.run(app, INPUT) == DONE

        def sampler(app: CompiledGraph) -> Any:
            async def sample() -> Any:
                return await per_call_async(lambda: rt.run(app, INPUT), calls) / LINEAR_STEPS

            return sample

        samples = await interleave(
            {"bare": sampler(bare), "off": sampler(off), "on": sampler(on)},
            reps=settings.pick(8, 30),
            warmup=2,
        )
    direct = {name: await _resilience_only(box, name, settings) for name in ("plain", "guarded")}
    off_us = (samples["off"].best - samples["bare"].best) * US
    on_us = (samples["on"].best - samples["bare"].best) * US
    result = Result(
        "W11-tools",
        on_us,
        off_us,
        "us/call",
        extra={
            "tool_layer_off_us": off_us,
            "tool_layer_on_us": on_us,
            "bare_node_us": samples["bare"].best * US,
            "resilience_off_us": direct["plain"],
            "resilience_on_us": direct["guarded"],
            "limits_add_us": direct["guarded"] - direct["plain"],
        },
    )
    result.checks = [
        at_most(off_us, 30, "tool layer, limits off <= 30 us"),
        at_most(on_us, 30, "tool layer, breaker + rate + concurrency <= 30 us"),
    ]
    return [result]


async def _resilience_only(box: Toolbox, name: str, settings: Settings) -> float:
    """Microseconds per ``Resilience.call`` of a trivial tool, outside a run, minus a bare
    call of its function (the best of a few samples)."""
    found, context, args = box.get(name), ToolContext(name), {"q": "a"}
    calls = settings.pick(5_000, 20_000)
    best = float("inf")
    for _ in range(5):
        layered = await per_call_async(lambda: box.resilience.call(found, args, context), calls)
        plain = await per_call_async(lambda: echo("a"), calls)
        best = min(best, (layered.wall - plain.wall) * US)
    return best


if __name__ == "__main__":
    import json
    import sys
    import tempfile
    from pathlib import Path

    import anyio

    quick = "--quick" in sys.argv
    with tempfile.TemporaryDirectory() as tmp:
        outcome = anyio.run(run, Settings(quick=quick, workdir=Path(tmp), pg_url=""))
    for line in outcome:
        print(json.dumps(line.to_json()))
