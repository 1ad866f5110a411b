"""Many concurrent runs on each side, timed from the first start to the last result.

Mainspring is driven two ways:

* ``loop``: ``handle = await rt.start(...)`` for each run in turn, then
  ``await handle.result()`` for all, as BENCHMARKS.md specifies;
* ``burst``: all starts issued at once from a task group (what a server does
  when many requests arrive together), then all results awaited. A diagnostic,
  measured in full runs only: it shows how much of ``loop`` is spent starting.

LangGraph: ``asyncio.gather`` over ``app.ainvoke`` coroutines.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Literal

import anyio
from langchain_core.runnables import RunnableConfig

from mainspring import CompiledGraph, RunHandle, Runtime

from harness import Sampler, Samples, Settings, Timing, interleave, timed

StartMode = Literal["loop", "burst"]
WARMUP_RUNS = 50


async def mainspring_fleet(
    rt: Runtime,
    app: CompiledGraph,
    runs: int,
    input: Any,
    *,
    mode: StartMode = "loop",
    expect: Any = None,
) -> Timing:
    """Time for ``runs`` runs of ``app``; checks every result equals ``expect`` if given."""
    results: list[Any] = []

    async def fleet() -> None:
        handles = await _start_all(rt, app, runs, input, mode)
        results.extend([await h.result() for h in handles])

    timing = await timed(fleet)
    _check(results, runs, expect)
    return timing


async def _start_all(
    rt: Runtime, app: CompiledGraph, runs: int, input: Any, mode: StartMode
) -> list[RunHandle]:
    if mode == "loop":
        return [await rt.start(app, input) for _ in range(runs)]
    handles: list[RunHandle] = []

    async def start_one() -> None:
        handles.append(await rt.start(app, input))

    async with anyio.create_task_group() as tg:
        for _ in range(runs):
            tg.start_soon(start_one)
    return handles


async def langgraph_fleet(
    app: Any,
    runs: int,
    input: Any,
    config: Callable[[], RunnableConfig] | None = None,
    *,
    expect: Any = None,
    **kwargs: Any,
) -> Timing:
    """Time for ``runs`` concurrent ``ainvoke`` calls (a fresh ``config()`` each)."""
    results: list[Any] = []

    async def fleet() -> None:
        calls = (app.ainvoke(input, config() if config else None, **kwargs) for _ in range(runs))
        results.extend(await asyncio.gather(*calls))

    timing = await timed(fleet)
    _check(results, runs, expect)
    return timing


def _check(results: list[Any], runs: int, expect: Any) -> None:
    if len(results) != runs:
        raise AssertionError(f"expected {runs} results, got {len(results)}")
    if expect is not None and any(r != expect for r in results):
        bad = next(r for r in results if r != expect)
        raise AssertionError(f"a run ended with {bad!r}, expected {expect!r}")


def start_modes(settings: Settings) -> tuple[StartMode, ...]:
    return settings.pick(("loop",), ("loop", "burst"))


async def mainspring_walls(
    rt: Runtime, app: CompiledGraph, settings: Settings, *, runs: int, input: Any, expect: Any
) -> dict[str, Samples]:
    """Timings of ``runs`` concurrent runs, per start mode, after a small warm-up fleet."""
    await mainspring_fleet(rt, app, WARMUP_RUNS, input, expect=expect)

    def sampler(mode: StartMode) -> Sampler:
        return lambda: mainspring_fleet(rt, app, runs, input, mode=mode, expect=expect)

    return await interleave(
        {m: sampler(m) for m in start_modes(settings)}, reps=settings.pick(1, 3), warmup=0
    )


def burst_extra(walls: Mapping[str, Samples], work: float = 1.0) -> dict[str, float]:
    """The burst-start figure (``work`` / best wall time), when it was measured."""
    burst = walls.get("burst")
    return {} if burst is None else {"mainspring_burst_start": work / burst.best}
