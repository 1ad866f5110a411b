"""W1: a 10-node linear graph of trivial sync nodes, no persistence: time per step.

Mainspring: ``await rt.run(app, input)`` on ``memory://``; LangGraph:
``app.invoke(input)`` without a checkpointer. Per step = run time / 10. The
workload is CPU-bound, so CPU time per step is reported too: it is the figure
that holds still when other processes compete for the cores.

W1-off: the same graph on SQLite with ``durability="off"`` (the journal written
in the background, nothing fsync'd for it), against the same LangGraph; its
floor is Mainspring on ``memory://``, sampled in the same rounds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

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


async def run_off(settings: Settings) -> list[Result]:
    app, lg = ms_linear(), lg_linear()
    ms_calls, lg_calls = settings.pick((200, 20), (500, 40))
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'w1off.db'}?create=true"
        async with Runtime.open(url) as disk, Runtime.open("memory://") as mem:
            assert await disk.run(app, INPUT, durability="off") == DONE
            assert await mem.run(app, INPUT) == DONE

            async def sqlite_off() -> Timing:
                run = lambda: disk.run(app, INPUT, durability="off")  # noqa: E731
                return await per_call_async(run, ms_calls) / LINEAR_STEPS

            async def memory() -> Timing:
                return await per_call_async(lambda: mem.run(app, INPUT), ms_calls) / LINEAR_STEPS

            async def langgraph() -> Timing:
                return per_call_sync(lambda: lg.invoke(INPUT), lg_calls) / LINEAR_STEPS

            samplers = {"mainspring": sqlite_off, "memory": memory, "langgraph": langgraph}
            s = await interleave(samplers, reps=settings.pick(8, 30), warmup=2)
    ms, floor = s["mainspring"], s["memory"]
    result = Result(
        "W1-off",
        ms.best * US,
        s["langgraph"].best * US,
        "us/step",
        paired_ratio=paired(s["langgraph"], ms),
        extra={
            "floor": floor.best * US,
            "vs_floor": paired(ms, floor),
            "mainspring_cpu": ms.best_cpu * US,
            "floor_cpu": floor.best_cpu * US,
            "spread": max(ms.spread, floor.spread),
        },
    )
    # A guard against regressions (it took 83 us/step before off appends were merged
    # and left unsynced), not a promise of in-memory speed: that is the floor column.
    result.checks = [at_most(result.mainspring, 50, "<= 50 us/step")]
    return [result]
