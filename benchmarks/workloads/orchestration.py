"""W1: a 10-node linear graph of trivial sync nodes, no persistence: time per step.

Mainspring: ``await rt.run(app, input)`` on ``memory://``; LangGraph:
``app.invoke(input)`` without a checkpointer. Per step = run time / 10. The
workload is CPU-bound, so CPU time per step is reported too: it is the figure
that holds still when other processes compete for the cores.
"""

from __future__ import annotations

from mainspring import Runtime

from graphs import LINEAR_STEPS, lg_linear, ms_linear
from harness import (
    US,
    Result,
    Samples,
    Settings,
    Timing,
    at_least,
    at_most,
    interleave,
    paired,
    per_call_async,
    per_call_sync,
)

INPUT = {"k": "a"}
DONE = {"k": "v"}


async def run(settings: Settings) -> list[Result]:
    app, lg = ms_linear(), lg_linear()
    ms_calls, lg_calls = settings.pick((200, 20), (500, 40))
    async with Runtime.open("memory://") as rt:
        assert await rt.run(app, INPUT) == DONE
        assert lg.invoke(INPUT) == DONE

        async def mainspring() -> Timing:
            return await per_call_async(lambda: rt.run(app, INPUT), ms_calls) / LINEAR_STEPS

        async def langgraph() -> Timing:
            return per_call_sync(lambda: lg.invoke(INPUT), lg_calls) / LINEAR_STEPS

        samples = await interleave(
            {"mainspring": mainspring, "langgraph": langgraph}, reps=settings.pick(8, 30), warmup=2
        )
    return [_result(samples["mainspring"], samples["langgraph"])]


def _result(ms: Samples, lg: Samples) -> Result:
    result = Result(
        "W1",
        ms.best * US,
        lg.best * US,
        "us/step",
        paired_ratio=paired(lg, ms),
        extra={
            "mainspring_cpu": ms.best_cpu * US,
            "anchor_cpu": lg.best_cpu * US,
            "cpu_ratio": lg.best_cpu / ms.best_cpu,
            "mainspring_median": ms.median * US,
            "anchor_median": lg.median * US,
            "spread": max(ms.spread, lg.spread),
        },
    )
    result.checks = [
        at_most(result.mainspring, 10, "<= 10 us/step"),
        at_least(result.ratio, 15, ">= 15x faster"),
    ]
    return result
