"""W1-gate: what the effect gate costs per effect (a W1 variant with one effect per node).

Three graphs of ten async nodes in a line, in memory, sampled in interleaved rounds:

* ``bare``: each node awaits a trivial async function itself (no effect);
* ``effect``: each node makes the same call as ``await ctx.step("e", fn)``: the whole
  effect pipeline with no gate hooks (two journal records, the arguments recorded,
  a commit);
* ``hooks``: the same with three trivial hooks registered (``before`` returning None).

``W1-gate`` reports ``hooks`` against ``effect`` per effect (target: three trivial
hooks add <= 5 us); the ``effect`` - ``bare`` difference (what an effect costs at all)
is reported as ``effect_us``. What the gate adds with no hooks (build the Effect, record
the arguments) is timed directly per effect as ``no_hooks_us`` (target <= 1 us).
"""

from __future__ import annotations

import time
from typing import Any

from mainspring import END, START, CompiledGraph, Context, Graph, Runtime
from mainspring.engine.gate import Effect, Gate, capped, masked

from graphs import LINEAR_STEPS, Linear
from harness import US, Result, Settings, Timing, at_most, interleave, per_call_async

INPUT = {"k": "a"}
DONE = {"k": "v"}


async def _trivial_call() -> str:
    return "v"


def _chain(name: str, with_effect: bool) -> CompiledGraph:
    async def bare(s: Any) -> dict[str, str]:
        return {"k": await _trivial_call()}

    async def effect(s: Any, ctx: Context) -> dict[str, str]:
        return {"k": await ctx.step("e", _trivial_call)}

    g = Graph(Linear)
    previous = START
    for i in range(LINEAR_STEPS):
        g.node(f"n{i}", effect if with_effect else bare)
        g.edge(previous, f"n{i}")
        previous = f"n{i}"
    g.edge(previous, END)
    return g.compile(name=name)


class _Allow:
    def before(self, effect: Effect) -> None:
        return None


def _no_hooks_cost(calls: int) -> float:
    """Seconds per effect for what the gate adds with no hooks: the check that there are
    none, and the effect's arguments recorded, secrets masked (here one positional and one
    named)."""
    gate = Gate()
    args, kwargs = ("order-17",), {"amount": 12}
    started = time.perf_counter()
    for _ in range(calls):
        if gate.empty:
            capped(masked({"args": list(args), **kwargs} if args else kwargs), gate.args_cap)
    return (time.perf_counter() - started) / calls


async def run(settings: Settings) -> list[Result]:
    bare, effect = _chain("bare", False), _chain("effect", True)
    calls = settings.pick(200, 500)
    async with (
        Runtime.open("memory://") as rt,
        Runtime.open("memory://", gates=[_Allow(), _Allow(), _Allow()]) as hooked,
    ):
        for runtime, app in ((rt, bare), (rt, effect), (hooked, effect)):
            assert await runtime.run(app, INPUT) == DONE

        def sampler(runtime: Runtime, app: CompiledGraph) -> Any:
            async def sample() -> Timing:
                return await per_call_async(lambda: runtime.run(app, INPUT), calls) / LINEAR_STEPS

            return sample

        samples = await interleave(
            {
                "bare": sampler(rt, bare),
                "effect": sampler(rt, effect),
                "hooks": sampler(hooked, effect),
            },
            reps=settings.pick(8, 30),
            warmup=2,
        )
    no_hooks = min(_no_hooks_cost(20_000) for _ in range(5))
    hooks = samples["hooks"].best - samples["effect"].best
    result = Result(
        "W1-gate",
        samples["hooks"].best * US,
        samples["effect"].best * US,
        "us/effect",
        extra={
            "three_hooks_us": hooks * US,
            "no_hooks_us": no_hooks * US,
            "effect_us": (samples["effect"].best - samples["bare"].best) * US,
            "bare_us": samples["bare"].best * US,
        },
    )
    result.checks = [
        at_most(no_hooks * US, 1, "no hooks <= 1 us"),
        at_most(hooks * US, 5, "three trivial hooks <= 5 us"),
    ]
    return [result]
