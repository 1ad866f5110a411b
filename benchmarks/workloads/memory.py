"""W6: 10,000 concurrent runs, each parked in an awaiting async step: RSS growth per run.

Each side runs in a fresh subprocess (``python -m workloads.memory SIDE RUNS``),
which warms up with a small fleet, takes its resident set size after
``gc.collect()``, starts the runs, waits until every one is parked in its node
(awaiting an event), collects again and reports the growth per run; then it
releases them and checks they all finish. Mainspring runs on ``memory://``
(``rt.start`` for each run), LangGraph without a checkpointer (a task per
``ainvoke``).
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from mainspring import Runtime

from graphs import lg_parked, ms_parked
from harness import Result, Settings, at_most

RUNS = 10_000
WARMUP_RUNS = 200
INPUT = {"k": "a"}
DONE = {"k": "v"}
BENCH_DIR = Path(__file__).resolve().parent.parent


def rss_kb() -> int:
    """This process's resident set size in KB, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status; W6 needs Linux")


class Gate:
    """Counts the runs parked in their node and releases them all at once."""

    def __init__(self) -> None:
        self.parked = 0
        self.released = anyio.Event()

    async def park(self, _: Any) -> dict[str, str]:
        self.parked += 1
        await self.released.wait()
        return {"k": "v"}

    async def until_parked(self, runs: int) -> None:
        while self.parked < runs:
            await anyio.sleep(0.005)


# --- in the child -----------------------------------------------------------------

Fleet = Callable[[Gate, int], Awaitable[Callable[[], Awaitable[list[Any]]]]]


async def measure(start_fleet: Fleet, runs: int) -> dict[str, float]:
    """Warm up, then RSS before and after ``runs`` parked runs; returns KB per run."""
    for count in (WARMUP_RUNS, runs):
        gate = Gate()
        gc.collect()
        before = rss_kb()
        finish = await start_fleet(gate, count)
        await gate.until_parked(count)
        gc.collect()
        after = rss_kb()
        gate.released.set()
        results = await finish()
        if len(results) != count or any(r != DONE for r in results):
            raise AssertionError("a parked run did not finish as expected")
    return {"kb_per_run": (after - before) / runs, "rss_before_kb": before, "rss_parked_kb": after}


async def child_mainspring(runs: int) -> dict[str, float]:
    async with Runtime.open("memory://") as rt:

        async def start_fleet(gate: Gate, count: int) -> Callable[[], Awaitable[list[Any]]]:
            app = ms_parked(gate.park)
            handles = [await rt.start(app, INPUT) for _ in range(count)]
            return lambda: _gather(h.result() for h in handles)

        return await measure(start_fleet, runs)


async def child_langgraph(runs: int) -> dict[str, float]:
    async def start_fleet(gate: Gate, count: int) -> Callable[[], Awaitable[list[Any]]]:
        app = lg_parked(gate.park)
        tasks = [asyncio.create_task(app.ainvoke(INPUT)) for _ in range(count)]
        return lambda: _gather(tasks)

    return await measure(start_fleet, runs)


async def _gather(awaitables: Any) -> list[Any]:
    return list(await asyncio.gather(*awaitables))


def child_main(side: str, runs: int) -> None:
    child = child_mainspring if side == "mainspring" else child_langgraph
    print(json.dumps(asyncio.run(child(runs))))


# --- in the parent ----------------------------------------------------------------


def in_subprocess(side: str, runs: int) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-m", "workloads.memory", side, str(runs)],
        cwd=BENCH_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"W6 {side} child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    measured: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return measured


async def run(settings: Settings) -> list[Result]:
    """Both sides in subprocesses at once (RSS is per process, so they do not disturb each other)."""
    runs = {"mainspring": RUNS, "langgraph": settings.pick(2_500, RUNS)}
    kept: dict[str, list[dict[str, float]]] = {side: [] for side in runs}

    async def child(side: str) -> None:
        kept[side].append(await anyio.to_thread.run_sync(in_subprocess, side, runs[side]))

    for _ in range(settings.pick(1, 3)):
        async with anyio.create_task_group() as tg:
            for side in runs:
                tg.start_soon(child, side)
    ms, lg = (_median_run(kept[side]) for side in runs)
    result = Result(
        "W6",
        ms["kb_per_run"],
        lg["kb_per_run"],
        "KB/run",
        extra={
            "runs": RUNS,
            "anchor_runs": runs["langgraph"],
            "mainspring_rss_parked_mb": ms["rss_parked_kb"] / 1024,
            "anchor_rss_parked_mb": lg["rss_parked_kb"] / 1024,
        },
    )
    result.checks = [at_most(result.mainspring, 10, "<= 10 KB/run")]
    return [result]


def _median_run(measured: list[dict[str, float]]) -> dict[str, float]:
    """The repetition with the median KB per run."""
    ordered = sorted(measured, key=lambda m: m["kb_per_run"])
    return ordered[len(ordered) // 2]


if __name__ == "__main__":
    child_main(sys.argv[1], int(sys.argv[2]))
