"""W10: hedging against a heavy-tailed upstream, with and without, in the same run.

The upstream is a ScriptedModel whose per-call latency is a seeded draw: 95% of the
calls take ~5 ms, 5% take 50-60 ms (p99 ~ 10x p50), the shape of a model server
with occasional queueing. The same number of calls go through a Router without
hedging and through one with ``Hedge()`` (its defaults: the p95 of the observed
latencies, at most 10% extra calls), in alternating blocks, from a few concurrent
callers. Reported: p50 and p99 of the call latency both ways, and the share of
extra upstream calls the hedges cost. Target (issue 11): p99 halved for <= 10%
extra calls.

    python benchmarks/run.py --only W10          # or, alone:
    cd benchmarks && python -m workloads.w10_hedging [--quick]
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable

import anyio

from mainspring.models.messages import ModelRequest, user
from mainspring.models.providers.scripted import ScriptedModel
from mainspring.models.routing import Router
from mainspring.models.spec import Hedge, ModelSpec

from harness import Result, Settings, at_most

MS = 1e3
FAST_S = 0.005
SLOW_S = (0.050, 0.060)
SLOW_SHARE = 0.05
CALLERS = 8
REQUEST = ModelRequest("", [user("summarise the ticket")])


def heavy_tail(seed: int) -> Callable[[], float]:
    """95% of calls ~5 ms (+-10%), 5% 50-60 ms: p99 about ten times p50."""
    rng = random.Random(seed)

    def draw() -> float:
        if rng.random() < SLOW_SHARE:
            return rng.uniform(*SLOW_S)
        return FAST_S * rng.uniform(0.9, 1.1)

    return draw


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


async def _block(router: Router, calls: int, into: list[float]) -> None:
    """``calls`` calls from CALLERS concurrent callers, each call's latency appended."""

    async def caller(n: int) -> None:
        for _ in range(n):
            started = time.perf_counter()
            await router.complete("m", REQUEST)
            into.append(time.perf_counter() - started)

    async with anyio.create_task_group() as tg:
        for i in range(CALLERS):
            tg.start_soon(caller, calls // CALLERS + (i < calls % CALLERS))


async def run(settings: Settings) -> list[Result]:
    calls, blocks = settings.pick((1_000, 4), (3_000, 6))
    plain_up = ScriptedModel(["ok"], latency=heavy_tail(1))
    hedged_up = ScriptedModel(["ok"], latency=heavy_tail(1))
    plain = Router({"m": ModelSpec(plain_up, retries=0)})
    hedged = Router({"m": ModelSpec(hedged_up, retries=0, hedge=Hedge())})
    await _block(plain, 50, [])  # warm both paths (imports, the event loop's first timers)
    await _block(hedged, 50, [])
    warm_calls = len(hedged_up.calls)
    plain_lat: list[float] = []
    hedged_lat: list[float] = []
    for i in range(blocks):
        order = [(plain, plain_lat), (hedged, hedged_lat)]
        for router, into in order if i % 2 == 0 else order[::-1]:
            await _block(router, calls // blocks, into)
    extra = (len(hedged_up.calls) - warm_calls - len(hedged_lat)) / len(hedged_lat)
    p50, p99 = quantile(plain_lat, 0.5), quantile(plain_lat, 0.99)
    h50, h99 = quantile(hedged_lat, 0.5), quantile(hedged_lat, 0.99)
    result = Result(
        "W10-hedging",
        h99 * MS,
        p99 * MS,
        "ms p99",
        extra={
            "calls_each_way": len(hedged_lat),
            "p50_ms_plain": p50 * MS,
            "p99_ms_plain": p99 * MS,
            "p50_ms_hedged": h50 * MS,
            "p99_ms_hedged": h99 * MS,
            "extra_calls_pct": extra * 100,
            "cancelled_losers": hedged_up.cancelled,
        },
    )
    result.checks = [
        at_most(h99, p99 / 2, "p99 halved"),
        at_most(extra * 100, 10.0, "<= 10% extra calls"),
    ]
    return [result]


if __name__ == "__main__":
    import json
    import tempfile
    from pathlib import Path

    quick = "--quick" in sys.argv
    with tempfile.TemporaryDirectory() as tmp:
        outcome = anyio.run(run, Settings(quick=quick, workdir=Path(tmp), pg_url=""))
    for line in outcome:
        print(json.dumps(line.to_json()))
