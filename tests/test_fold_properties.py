"""Property tests of the journal fold: any prefix, any snapshot point, the same state."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mainspring import END, START, Context, Graph, Runtime, Send, append
from mainspring.engine.fold import RunFold
from mainspring.events import decode, encode


class W(TypedDict, total=False):
    plan: list[int]
    round: int
    items: Annotated[list[str], append]


def build() -> Any:
    g = Graph(W, name="prop")

    @g.node
    def fan(s: W) -> dict[str, Any]:
        return {"round": s.get("round", 0) + 1}

    @g.node
    async def item(arg: dict[str, Any], ctx: Context) -> dict[str, Any]:
        value = await ctx.step("make", lambda: f"{arg['r']}.{arg['i']}")
        if arg["ask"]:
            value += ":" + str(await ctx.interrupt({"i": arg["i"]}))
        return {"items": [value]}

    def route(s: W) -> Any:
        r = s["round"]
        if r > len(s["plan"]):
            return END
        n = s["plan"][r - 1]
        return [Send("item", {"r": r, "i": i, "ask": i == 0 and r == 1}) for i in range(n)] or "fan"

    g.edge(START, "fan")
    g.branch("fan", route, ["item", "fan", END])
    g.edge("item", "fan")
    return g.compile()


APP = build()


async def _run(rt: Runtime, plan: list[int]) -> tuple[str, dict[str, Any]]:
    handle = await rt.start(APP, {"plan": plan})
    outcome = await handle.wait()
    while outcome.interrupts:
        await rt.resume(handle.run_id, "ok", interrupt_id=outcome.interrupts[0].id)
        outcome = await handle.wait()
    return handle.run_id, outcome.state


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=4),
    cut=st.floats(0, 1),
)
def test_fold_of_prefix_plus_snapshot_equals_full_fold(plan: list[int], cut: float) -> None:
    async def check() -> None:
        async with Runtime.open("memory://") as rt:
            await check_in(rt)

    async def check_in(rt: Runtime) -> None:
        run_id, final = await _run(rt, plan)
        events = await rt.store.read(run_id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        full = RunFold(APP.schema)
        for e in events:
            full.apply(e)
        assert APP.schema.output(full.state) == final
        expected = [
            f"{r + 1}.{i}" + (":ok" if r == 0 and i == 0 else "")
            for r, n in enumerate(plan)
            for i in range(n)
        ]
        assert final.get("items", []) == expected

        # Snapshot anywhere (through JSON, as a durable store keeps it) and fold the rest.
        k = int(cut * (len(events) - 1)) + 1
        head = RunFold(APP.schema)
        for e in events[:k]:
            head.apply(e)
        snap = decode(encode(head.to_snapshot()))
        resumed = RunFold.from_snapshot(APP.schema, k, snap)
        for e in events[k:]:
            resumed.apply(e)
        assert resumed.state == full.state
        assert resumed.seq == full.seq and resumed.status == full.status

        report = await rt.replay(run_id)
        assert report.ok, str(report)

    anyio.run(check)
