"""W2-audit: what the audit chain costs on the durable path, chain on against chain off.

Side by side in one loop (interleaved rounds, as W2):

* ``on`` / ``off``: W2's 10-node linear graph on SQLite, ``durability="sync"`` (WAL,
  ``synchronous=FULL``, one fsync'd commit per step), the store's audit chain on (the
  default: every event hashed in its write transaction, an anchor at the run's creation
  and at its end) and off (``SQLiteStore(audit=False)``). Target: on <= 1.10x off.
* ``effects_on`` / ``effects_off``: the same graph whose nodes each make one effect
  (``ctx.step``, two more journal records per step): the chain's cost per effect is
  ``(effects_on - effects_off) / 10`` per run, reported as ``per_effect_us``.
* ``floor``: one raw fsync'd commit (W2's floor), for scale.

``hash_us`` times the chain's arithmetic alone (one ``link`` over a 120-byte event).
"""

from __future__ import annotations

import statistics
import time
from contextlib import AsyncExitStack, closing
from typing import Any

from mainspring import END, START, CompiledGraph, Context, Graph, Runtime
from mainspring.store._chain import GENESIS, link
from mainspring.store.sqlite import SQLiteStore

from floors import ROW, RawCommits
from graphs import LINEAR_STEPS, Linear, ms_linear
from harness import US, Result, Settings, async_sampler, at_most, interleave, paired, sync_sampler

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
    runs, commits = settings.pick((10, 100), (30, 300))
    app, effects = ms_linear(), _effects()
    async with AsyncExitStack() as stack:
        floor = stack.enter_context(closing(RawCommits(work / "floor.db", "FULL")))
        on = await stack.enter_async_context(
            Runtime(SQLiteStore(f"sqlite:///{work / 'on.db'}"), durability="sync")
        )
        off = await stack.enter_async_context(
            Runtime(SQLiteStore(f"sqlite:///{work / 'off.db'}", audit=False), durability="sync")
        )
        for rt in (on, off):
            assert await rt.run(app, INPUT) == DONE
            assert await rt.run(effects, INPUT) == DONE
        samples = await interleave(
            {
                "on": async_sampler(lambda: on.run(app, INPUT), runs, LINEAR_STEPS),
                "off": async_sampler(lambda: off.run(app, INPUT), runs, LINEAR_STEPS),
                "effects_on": async_sampler(lambda: on.run(effects, INPUT), runs, LINEAR_STEPS),
                "effects_off": async_sampler(lambda: off.run(effects, INPUT), runs, LINEAR_STEPS),
                "floor": sync_sampler(floor.commit_one, commits),
            },
            reps=settings.pick(5, 15),
            warmup=1,
        )
        from mainspring.guard.audit import verify

        report = await verify(on)
        assert report.ok, report.findings
    ratio = paired(samples["on"], samples["off"])
    cpu_ratio = statistics.median(
        a.cpu / b.cpu for a, b in zip(samples["on"].values, samples["off"].values, strict=True)
    )
    effect_ratio = paired(samples["effects_on"], samples["effects_off"])
    result = Result(
        "W2-audit",
        samples["on"].best * US,
        samples["off"].best * US,
        "us/step",
        paired_ratio=1 / ratio,
        extra={
            "on_vs_off": ratio,
            "added_us_per_step": (samples["on"].best - samples["off"].best) * US,
            "cpu_on_us": samples["on"].best_cpu * US,
            "cpu_off_us": samples["off"].best_cpu * US,
            "cpu_on_vs_off": cpu_ratio,
            "effects_on_vs_off": effect_ratio,
            "per_effect_us": (samples["effects_on"].best - samples["effects_off"].best) * US,
            "per_effect_cpu_us": (samples["effects_on"].best_cpu - samples["effects_off"].best_cpu)
            * US,
            "floor": samples["floor"].best * US,
            "hash_us": _hash_cost(settings.pick(20_000, 100_000)) * US,
            "spread": max(s.spread for s in samples.values()),
            "note": "anchor = the same store with the chain off; ratio = off/on",
        },
    )
    result.checks = [at_most(ratio, 1.10, "chain on <= 1.10x off")]
    return [result]
