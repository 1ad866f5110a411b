"""Profile the Mainspring side of a workload: where does each step's time go?

    python benchmarks/hotspots.py W1|W2|W2-batch|W3|W3-batch|W4|W4-sqlite
        [--start loop|burst] [--top N] [--sort tottime|cumtime]

Warms the workload up, runs one round unprofiled and reports its wall time,
the CPU time of each thread (from /proc: the event loop versus the stores'
writer and worker threads) and the time spent in the cyclic garbage collector,
all per graph step. Then it runs one more round under cProfile (event-loop
thread only) and lists the top functions per step: as profiled, and scaled so
that the event loop's busy time matches its unprofiled CPU time (an estimate:
profiling slows small functions more than big ones).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
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

from fleets import StartMode, mainspring_fleet
from graphs import LINEAR_STEPS, SLEEPY_STEPS, ms_linear, ms_sleepy
from harness import US
from workloads.postgres import MS_SCHEMA, reset_schemas, with_query

INPUT = {"k": "a"}
IDLE = "<method 'poll' of 'select.epoll' objects>"  # the event loop waiting: not work

Round = Callable[[Runtime, CompiledGraph], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Case:
    """One workload's Mainspring side: a store, a durability, a graph and how to drive it."""

    url: str
    durability: str
    app: Callable[[], CompiledGraph]
    steps: int  # graph steps per round, to express costs per step
    round: Round


def _sequential(runs: int) -> Round:
    async def round_(rt: Runtime, app: CompiledGraph) -> None:
        for _ in range(runs):
            await rt.run(app, INPUT)

    return round_


def _fleet(runs: int, mode: StartMode) -> Round:
    return lambda rt, app: mainspring_fleet(rt, app, runs, INPUT, mode=mode)


def cases(workdir: Path, pg_url: str, mode: StartMode) -> dict[str, Case]:
    sqlite = f"sqlite:///{workdir / 'profile.db'}"
    postgres = with_query(pg_url, schema=MS_SCHEMA)
    return {
        "W1": Case("memory://", "sync", ms_linear, 2000 * LINEAR_STEPS, _sequential(2000)),
        "W2": Case(sqlite, "sync", ms_linear, 100 * LINEAR_STEPS, _sequential(100)),
        "W2-batch": Case(sqlite, "batch", ms_linear, 1000 * LINEAR_STEPS, _fleet(1000, mode)),
        "W3": Case(postgres, "sync", ms_linear, 100 * LINEAR_STEPS, _sequential(100)),
        "W3-batch": Case(postgres, "batch", ms_linear, 1000 * LINEAR_STEPS, _fleet(1000, mode)),
        "W4": Case("memory://", "sync", ms_sleepy, 1000 * SLEEPY_STEPS, _fleet(1000, mode)),
        "W4-sqlite": Case(sqlite, "batch", ms_sleepy, 1000 * SLEEPY_STEPS, _fleet(1000, mode)),
    }


# --- measuring --------------------------------------------------------------------


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


class GcClock:
    """Counts cyclic-GC collections and the time they take, through ``gc.callbacks``."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]  # by generation
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.collections[info["generation"]] += 1
            self.seconds[info["generation"]] += time.perf_counter() - self._started

    def __enter__(self) -> GcClock:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


@dataclass(frozen=True, slots=True)
class Plain:
    """What an unprofiled round cost."""

    wall: float
    cpu: dict[str, float]
    gc: GcClock


async def plain_round(case: Case, rt: Runtime, app: CompiledGraph) -> Plain:
    gc.collect()
    before = thread_cpu()
    with GcClock() as clock:
        start = time.perf_counter()
        await case.round(rt, app)
        wall = time.perf_counter() - start
    cpu = {name: t - before.get(name, 0.0) for name, t in thread_cpu().items()}
    return Plain(wall, {name: t for name, t in cpu.items() if t > 0}, clock)


async def profiled_round(case: Case, rt: Runtime, app: CompiledGraph) -> pstats.Stats:
    gc.collect()
    profiler = cProfile.Profile()
    profiler.enable()
    await case.round(rt, app)
    profiler.disable()
    return pstats.Stats(profiler)


# --- reporting --------------------------------------------------------------------


def print_plain(plain: Plain, steps: int) -> None:
    per_step = {
        name: t / steps * US for name, t in sorted(plain.cpu.items(), key=lambda kv: -kv[1])
    }
    print(
        f"unprofiled round: wall {plain.wall:.3f} s = {plain.wall / steps * US:.1f} us/step over {steps} steps"
    )
    print(
        "  CPU per step by thread: "
        + ", ".join(f"{name} {us:.1f} us" for name, us in per_step.items())
    )
    by_gen = ", ".join(
        f"gen{g} {n} x {t / n * 1e3 if n else 0:.2f} ms"
        for g, (n, t) in enumerate(zip(plain.gc.collections, plain.gc.seconds, strict=True))
    )
    total = sum(plain.gc.seconds)
    print(f"  cyclic GC: {total / steps * US:.1f} us/step ({total:.3f} s; {by_gen})")


def print_top(stats: pstats.Stats, steps: int, main_cpu: float, *, top: int, sort: str) -> None:
    rows: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    busy = sum(r[2] for f, r in rows.items() if _name(f) != IDLE)
    scale = main_cpu / busy if busy else 0.0
    key = 2 if sort == "tottime" else 3
    print(f"profiled round (event-loop thread); 'scaled' = self time x {scale:.2f}, per step")
    print(f"{'calls':>9} {'self us':>9} {'cum us':>9} {'scaled':>7}  function")
    for func, row in sorted(rows.items(), key=lambda kv: -kv[1][key])[:top]:
        calls, tottime, cumtime = row[1], row[2], row[3]
        scaled = "-" if _name(func) == IDLE else f"{tottime * scale / steps * US:.2f}"
        print(
            f"{calls:>9} {tottime / steps * US:>9.2f} {cumtime / steps * US:>9.2f} {scaled:>7}  {_name(func)}"
        )


def _name(func: tuple[str, int, str]) -> str:
    path, line, name = func
    for marker in ("site-packages/", "/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{line}({name})" if line else name


async def profile(case: Case, *, top: int, sort: str) -> None:
    app = case.app()
    async with Runtime.open(case.url, durability=case.durability) as rt:
        await case.round(rt, app)  # warm-up
        plain = await plain_round(case, rt, app)
        stats = await profiled_round(case, rt, app)
    print_plain(plain, case.steps)
    print_top(stats, case.steps, plain.cpu.get("MainThread", 0.0), top=top, sort=sort)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "workload", choices=["W1", "W2", "W2-batch", "W3", "W3-batch", "W4", "W4-sqlite"]
    )
    parser.add_argument(
        "--start", choices=["loop", "burst"], default="loop", help="how fleets start their runs"
    )
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--sort", choices=["tottime", "cumtime"], default="tottime")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    postgres = args.workload.startswith("W3")
    with tempfile.TemporaryDirectory(prefix="mainspring-profile-") as tmp:
        case = cases(Path(tmp), args.pg_url, args.start)[args.workload]
        if postgres:
            asyncio.run(reset_schemas(args.pg_url, MS_SCHEMA, create=False))
        try:
            asyncio.run(profile(case, top=args.top, sort=args.sort))
        finally:
            if postgres:
                asyncio.run(reset_schemas(args.pg_url, MS_SCHEMA, create=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
