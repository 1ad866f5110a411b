"""W2-audit: what the audit chain costs on the durable path, chain on against chain off.

Side by side in one loop (interleaved rounds, as W2):

* ``on`` / ``off``: W2's 10-node linear graph on SQLite, ``durability="sync"`` (WAL,
  ``synchronous=FULL``, one fsync'd commit per step), the store's audit chain on (the
  default: every event hashed in its write transaction, an anchor at the run's creation
  and at its end) and off (``SQLiteStore(audit=False)``). Target: on <= 1.10x off.
* ``cpu_*``: the same pair on a store in ``/dev/shm`` (tmpfs: fsync returns at once), so
  that what is left is the CPU the chain adds, with none of the disk's noise; and the
  same graph whose nodes each make one effect (``ctx.step``: two more journal records per
  step): ``per_effect_us`` is what the chain adds per effect there.
* ``floor``: one raw fsync'd commit (W2's floor), for scale.

``hash_us`` times the chain's arithmetic alone (one event of 120 bytes).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from contextlib import AsyncExitStack, closing
from pathlib import Path
from typing import Any

from mainspring import END, START, CompiledGraph, Context, Graph, Runtime
from mainspring.store._chain import GENESIS, link
from mainspring.store.sqlite import SQLiteStore

from floors import ROW, RawCommits
from graphs import LINEAR_STEPS, Linear, ms_linear
from harness import (
    US,
    Result,
    Samples,
    Settings,
    async_sampler,
    at_most,
    interleave,
    paired,
    sync_sampler,
)

INPUT = {"k": "a"}
DONE = {"k": "v"}


async def _call() -> str:
    return "v"


def _effects() -> CompiledGraph:
    async def node(s: Any, ctx: Context) -> dict[str, str]:
        return {"k": await ctx.step("e", _call)}

    g = Graph(Linear)
    previous = START
    for i in range(LINEAR_STEPS):
        g.node(f"n{i}", node)
        g.edge(previous, f"n{i}")
        previous = f"n{i}"
    g.edge(previous, END)
    return g.compile(name="effects")


def _hash_cost(calls: int) -> float:
    started = time.perf_counter()
    h = GENESIS
    for i in range(calls):
        h = link(h, "0123456789abcdef0123456789abcdef", i, "step_finished", 1.5, ROW)
    return (time.perf_counter() - started) / calls


async def run(settings: Settings) -> list[Result]:
    work = settings.workdir / "w2audit"
    work.mkdir()
    shm = Path(
        tempfile.mkdtemp(prefix="w2audit-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    )
    runs, commits = settings.pick((10, 100), (30, 300))
    app, effects = ms_linear(), _effects()
    try:
        async with AsyncExitStack() as stack:
            floor = stack.enter_context(closing(RawCommits(work / "floor.db", "FULL")))

            async def runtime(path: Path, audit: bool) -> Runtime:
                store = SQLiteStore(f"sqlite:///{path}", audit=audit)
                rt = await stack.enter_async_context(Runtime(store, durability="sync"))
                assert await rt.run(app, INPUT) == DONE
                assert await rt.run(effects, INPUT) == DONE
                return rt

            on, off = await runtime(work / "on.db", True), await runtime(work / "off.db", False)
            t_on, t_off = await runtime(shm / "on.db", True), await runtime(shm / "off.db", False)

            def steps(rt: Runtime, graph: CompiledGraph) -> Any:
                return async_sampler(lambda: rt.run(graph, INPUT), runs, LINEAR_STEPS)

            samples = await interleave(
                {
                    "on": steps(on, app),
                    "off": steps(off, app),
                    "cpu_on": steps(t_on, app),
                    "cpu_off": steps(t_off, app),
                    "cpu_effects_on": steps(t_on, effects),
                    "cpu_effects_off": steps(t_off, effects),
                    "floor": sync_sampler(floor.commit_one, commits),
                },
                reps=settings.pick(5, 15),
                warmup=1,
            )
            from mainspring.guard.audit import verify

            for rt in (on, t_on):
                report = await verify(rt)
                assert report.ok, report.findings
    finally:
        shutil.rmtree(shm, ignore_errors=True)
    return [_result(samples, settings)]


def _result(s: dict[str, Samples], settings: Settings) -> Result:
    ratio = paired(s["on"], s["off"])
    result = Result(
        "W2-audit",
        s["on"].best * US,
        s["off"].best * US,
        "us/step",
        paired_ratio=1 / ratio,
        extra={
            "on_vs_off": ratio,
            "added_us_per_step": (s["on"].best - s["off"].best) * US,
            "tmpfs_on_vs_off": paired(s["cpu_on"], s["cpu_off"]),
            "tmpfs_added_us_per_step": (s["cpu_on"].best - s["cpu_off"].best) * US,
            "tmpfs_effects_on_vs_off": paired(s["cpu_effects_on"], s["cpu_effects_off"]),
            "per_effect_us": (s["cpu_effects_on"].best - s["cpu_effects_off"].best) * US
            - (s["cpu_on"].best - s["cpu_off"].best) * US,
            "tmpfs_on_us": s["cpu_on"].best * US,
            "tmpfs_off_us": s["cpu_off"].best * US,
            "floor": s["floor"].best * US,
            "hash_us": _hash_cost(settings.pick(20_000, 100_000)) * US,
            "spread": max(v.spread for v in s.values()),
            "note": "anchor = the same store with the chain off; ratio = off/on",
        },
    )
    result.checks = [at_most(ratio, 1.10, "chain on <= 1.10x off")]
    return result
