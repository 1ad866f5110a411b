"""Profile the Mainspring side of a workload: where does each step's time go?

    python benchmarks/hotspots.py W1|W2|W2-batch|W3|W3-batch|W4|W4-sqlite [--top N] [--sort tottime|cumtime]

Warms the workload up, runs it once unprofiled (wall time and CPU time per
thread, from /proc: the event loop versus the store's writer threads), then
once more under cProfile (event-loop thread only) and prints the top functions
with their cost in microseconds per graph step, the unit the targets use.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mainspring import CompiledGraph, Runtime

from fleets import mainspring_fleet
from graphs import LINEAR_STEPS, SLEEPY_STEPS, ms_linear, ms_sleepy
from harness import US
from workloads.postgres import MS_SCHEMA, reset_schemas, with_query

INPUT = {"k": "a"}


@dataclass(frozen=True, slots=True)
class Case:
    """One workload's Mainspring side: a store, a durability, a graph and how to drive it."""

    url: str
    durability: str
    app: Callable[[], CompiledGraph]
    steps: int  # graph steps per round, to express costs per step
    round: Callable[[Runtime, CompiledGraph], Awaitable[object]]


def _sequential(runs: int) -> Callable[[Runtime, CompiledGraph], Awaitable[object]]:
    async def round_(rt: Runtime, app: CompiledGraph) -> None:
        for _ in range(runs):
            await rt.run(app, INPUT)

    return round_


def _fleet(runs: int) -> Callable[[Runtime, CompiledGraph], Awaitable[object]]:
    return lambda rt, app: mainspring_fleet(rt, app, runs, INPUT)


def cases(workdir: Path, pg_url: str) -> dict[str, Case]:
    sqlite = f"sqlite:///{workdir / 'profile.db'}"
    postgres = with_query(pg_url, schema=MS_SCHEMA)
    return {
        "W1": Case("memory://", "sync", ms_linear, 2000 * LINEAR_STEPS, _sequential(2000)),
        "W2": Case(sqlite, "sync", ms_linear, 100 * LINEAR_STEPS, _sequential(100)),
        "W2-batch": Case(sqlite, "batch", ms_linear, 1000 * LINEAR_STEPS, _fleet(1000)),
        "W3": Case(postgres, "sync", ms_linear, 100 * LINEAR_STEPS, _sequential(100)),
        "W3-batch": Case(postgres, "batch", ms_linear, 1000 * LINEAR_STEPS, _fleet(1000)),
        "W4": Case("memory://", "sync", ms_sleepy, 1000 * SLEEPY_STEPS, _fleet(1000)),
        "W4-sqlite": Case(sqlite, "batch", ms_sleepy, 1000 * SLEEPY_STEPS, _fleet(1000)),
    }


async def profile(case: Case, *, top: int, sort: str) -> None:
    app = case.app()
    async with Runtime.open(case.url, durability=case.durability) as rt:
        await case.round(rt, app)  # warm-up
        cpu_before = thread_cpu()
        plain = await _timed(case.round, rt, app)
        cpu = {name: t - cpu_before.get(name, 0.0) for name, t in thread_cpu().items()}
        profiler = cProfile.Profile()
        profiler.enable()
        profiled = await _timed(case.round, rt, app)
        profiler.disable()
    print(
        f"wall: {plain:.3f} s unprofiled ({plain / case.steps * US:.1f} us/step), "
        f"{profiled:.3f} s profiled"
    )
    print(
        "CPU per step, unprofiled round: "
        + ", ".join(
            f"{name} {seconds / case.steps * US:.1f} us"
            for name, seconds in sorted(cpu.items(), key=lambda kv: -kv[1])
            if seconds > 0
        )
    )
    print(f"costs below: profiled event-loop thread, us per step ({case.steps} steps)")
    _print_top(pstats.Stats(profiler), case.steps, top=top, sort=sort)


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) used so far by each thread of this process, by thread name."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        name = names.get(int(tid), "other threads")
        used[name] = used.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return used


async def _timed(
    fn: Callable[[Runtime, CompiledGraph], Awaitable[object]], rt: Runtime, app: CompiledGraph
) -> float:
    start = time.perf_counter()
    await fn(rt, app)
    return time.perf_counter() - start


def _print_top(stats: pstats.Stats, steps: int, *, top: int, sort: str) -> None:
    rows: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    key = 2 if sort == "tottime" else 3
    print(f"{'calls':>9} {'self us/step':>13} {'cum us/step':>12}  function")
    for func, (_, calls, tottime, cumtime, _) in sorted(rows.items(), key=lambda kv: -kv[1][key])[
        :top
    ]:
        print(
            f"{calls:>9} {tottime / steps * US:>13.2f} {cumtime / steps * US:>12.2f}  {_name(func)}"
        )


def _name(func: tuple[str, int, str]) -> str:
    path, line, name = func
    for marker in ("site-packages/", "/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{line}({name})" if line else name


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "workload", choices=["W1", "W2", "W2-batch", "W3", "W3-batch", "W4", "W4-sqlite"]
    )
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--sort", choices=["tottime", "cumtime"], default="tottime")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mainspring-profile-") as tmp:
        case = cases(Path(tmp), args.pg_url)[args.workload]
        if case.url.startswith("postgresql"):
            asyncio.run(reset_schemas(args.pg_url, MS_SCHEMA, create=False))
        try:
            asyncio.run(profile(case, top=args.top, sort=args.sort))
        finally:
            if case.url.startswith("postgresql"):
                asyncio.run(reset_schemas(args.pg_url, MS_SCHEMA, create=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
