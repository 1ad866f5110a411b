"""W4: 1,000 concurrent runs x 5 async steps, each awaiting 10 ms: wall time.

Mainspring in memory (``memory://``) and durable on SQLite with group commit
(``durability="batch"``), against LangGraph ``ainvoke`` x1,000 gathered,
without a checkpointer. The floor, measured alongside: 1,000 bare tasks each
awaiting 10 ms five times (0.05 s on an idle machine). CPU time (all threads)
is reported too: on a busy machine it shows the work done apart from waiting.
"""

from __future__ import annotations

import anyio

from mainspring import CompiledGraph, Runtime

from fleets import WARMUP_RUNS, StartMode, langgraph_fleet, mainspring_fleet, start_modes
from graphs import SLEEP_S, SLEEPY_STEPS, lg_sleepy, ms_sleepy
from harness import Result, Sampler, Samples, Settings, Timing, at_most, interleave, paired, timed

RUNS = 1000
INPUT = {"k": "a"}
DONE = {"k": "v"}


async def floor() -> Timing:
    """The physical floor: the same waits in bare tasks."""

    async def sleeper() -> None:
        for _ in range(SLEEPY_STEPS):
            await anyio.sleep(SLEEP_S)

    async def fleet() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(RUNS):
                tg.start_soon(sleeper)

    return await timed(fleet)


def _ms_sampler(rt: Runtime, app: CompiledGraph, mode: StartMode) -> Sampler:
    return lambda: mainspring_fleet(rt, app, RUNS, INPUT, mode=mode, expect=DONE)


async def run(settings: Settings) -> list[Result]:
    app, lg = ms_sleepy(), lg_sleepy()
    db = settings.workdir / "w4.db"
    async with (
        Runtime.open("memory://") as mem,
        Runtime.open(f"sqlite:///{db}", durability="batch") as disk,
    ):
        for rt in (mem, disk):
            await mainspring_fleet(rt, app, WARMUP_RUNS, INPUT, expect=DONE)
        await langgraph_fleet(lg, WARMUP_RUNS, INPUT, expect=DONE)
        samplers: dict[str, Sampler] = {
            "memory": _ms_sampler(mem, app, "loop"),
            "langgraph": lambda: langgraph_fleet(lg, RUNS, INPUT, expect=DONE),
            "floor": floor,
        }
        samplers |= {
            f"sqlite_{mode}": _ms_sampler(disk, app, mode) for mode in start_modes(settings)
        }
        samples = await interleave(samplers, reps=settings.pick(1, 3), warmup=0)
    return [_memory(samples), _sqlite(samples)]


def _memory(s: dict[str, Samples]) -> Result:
    result = Result(
        "W4",
        s["memory"].best,
        s["langgraph"].best,
        "s",
        paired_ratio=paired(s["langgraph"], s["memory"]),
        extra=_extra(s, "memory"),
    )
    result.checks = [at_most(result.mainspring, 0.1, "<= 0.1 s")]
    return result


def _sqlite(s: dict[str, Samples]) -> Result:
    extra = _extra(s, "sqlite_loop")
    if "sqlite_burst" in s:
        extra["mainspring_burst_start"] = s["sqlite_burst"].best
    result = Result(
        "W4-sqlite",
        s["sqlite_loop"].best,
        s["langgraph"].best,
        "s",
        paired_ratio=paired(s["langgraph"], s["sqlite_loop"]),
        extra=extra,
    )
    result.checks = [at_most(result.mainspring, 0.4, "<= 0.4 s")]
    return result


def _extra(s: dict[str, Samples], side: str) -> dict[str, float | int | str]:
    return {
        "floor": s["floor"].best,
        "vs_floor": paired(s[side], s["floor"]),
        "mainspring_cpu": s[side].best_cpu,
        "anchor_cpu": s["langgraph"].best_cpu,
        "runs": RUNS,
    }
