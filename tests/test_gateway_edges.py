"""Where the gateway meets the engine's edges: approvals that must stand on a re-run,
hooks after an approval, calls cancelled mid-flight, subgraphs, failed calls' spend,
and tokens that must not outlive their call (a review of issue 11's integration)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypedDict

import anyio
import pytest

from mainspring import END, START, Context, Graph, RunStatus, Runtime
from mainspring.engine.gate import Approve, Effect
from mainspring.events import EffectFinished, ModelDelta
from mainspring.models import (
    Budget,
    Gateway,
    ModelRequest,
    ModelResponse,
    ModelSpec,
    NoModelAvailableError,
    Price,
    ScriptedModel,
    StreamEvent,
    StreamInterruptedError,
    TextDelta,
)

pytestmark = pytest.mark.anyio


class S(TypedDict, total=False):
    q: str
    a: str


def one_node(fn: Any, name: str = "g") -> Any:
    g = Graph(S, name=name)

    @g.node
    async def ask(s: S, ctx: Context) -> S:
        result: S = await fn(s, ctx)
        return result

    g.edge(START, "ask")
    g.edge("ask", END)
    return g.compile()


def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'x.db'}"


async def test_a_budget_approval_is_not_given_again_to_the_nodes_own_question(
    tmp_path: Path,
) -> None:
    """After a person approves spending, the re-run meets that approval, not the budget again:
    the node's own next question still waits for its own answer."""
    gateway = Gateway(
        {"fast": ScriptedModel(["draft"])},
        budgets=[Budget(limit=1, on="calls", per="tenant", window=60, action="ask")],
    )
    now = [1_000_000.0]  # the budget's clock, moved by the test (not by a loaded machine)
    assert gateway.budget_gate is not None
    gateway.budget_gate.clock = lambda: now[0]

    async def send(s: S, ctx: Context) -> S:
        reply = await ctx.model("fast", s["q"])
        ok = await ctx.interrupt({"send this?": reply.text})
        return {"a": f"sent={ok!r}"}

    app = one_node(send)
    async with Runtime.open(url(tmp_path), models=gateway, graphs=[app]) as rt:
        first = await rt.start(app, {"q": "a"}, metadata={"tenant": "t"})
        assert (await first.wait()).status is RunStatus.INTERRUPTED  # its own question
        second = await rt.start(app, {"q": "b"}, metadata={"tenant": "t"})
        parked = await second.wait()
        assert "approve" in parked.interrupts[0].payload  # the budget asks
        now[0] += 61  # the window rolls over: the budget would now allow the call
        await rt.resume(second.run_id, True)
        again = await rt.handle(second.run_id).wait()
        assert again.status is RunStatus.INTERRUPTED  # the node's own question, unanswered
        assert again.interrupts[0].payload == {"send this?": "draft"}
        await rt.resume(second.run_id, "yes")
        assert (await rt.handle(second.run_id).result())["a"] == "sent='yes'"


class AskForBig:
    name = "policy"

    def before(self, effect: Effect) -> Approve | None:
        if effect.kind == "model" and effect.args.get("model") == "big":
            return Approve("the big model needs a person's OK")
        return None


async def test_a_policy_approval_does_not_let_a_call_past_the_budget(tmp_path: Path) -> None:
    model = ScriptedModel(["ok"])
    gateway = Gateway({"big": model}, budgets=[Budget(limit=2, on="calls", per="tenant")])

    async def ask(s: S, ctx: Context) -> S:
        return {"a": (await ctx.model("big", s["q"])).text}

    app = one_node(ask)
    outcomes = []
    async with Runtime.open(url(tmp_path), models=gateway, gates=[AskForBig()]) as rt:
        for i in range(4):
            handle = await rt.start(app, {"q": f"q{i}"}, metadata={"tenant": "t1"})
            assert (await handle.wait()).status is RunStatus.INTERRUPTED
            await rt.resume(handle.run_id, True)
            outcomes.append((await rt.handle(handle.run_id).wait()).status)
    assert outcomes == [RunStatus.FINISHED] * 2 + [RunStatus.FAILED] * 2
    assert len(model.calls) == 2


async def test_a_call_cancelled_mid_flight_releases_its_budget(tmp_path: Path) -> None:
    slow = ScriptedModel(["late"], latency=30)
    gateway = Gateway({"fast": slow}, budgets=[Budget(limit=5000, per="tenant")])

    async def ask(s: S, ctx: Context) -> S:
        return {"a": (await ctx.model("fast", s["q"], max_tokens=1000)).text}

    app = one_node(ask)
    async with Runtime.open(url(tmp_path), models=gateway) as rt:
        for _ in range(6):
            handle = await rt.start(app, {"q": "hi"}, metadata={"tenant": "t1"})
            while not slow.calls or len(slow.calls) < slow.cancelled + 1:
                await anyio.sleep(0.01)
            await handle.cancel()
    assert gateway.budget_gate is not None
    assert await gateway.budget_gate.ledger.spent("tenant:t1", "tokens") == 0


async def test_model_calls_in_a_subgraph_count_against_the_tenant(tmp_path: Path) -> None:
    model = ScriptedModel(["ok"])
    gateway = Gateway({"fast": model}, budgets=[Budget(limit=1, on="calls", per="tenant")])

    async def ask(s: S, ctx: Context) -> S:
        return {"a": (await ctx.model("fast", s["q"])).text}

    child = one_node(ask, name="child")
    parent = Graph(S, name="parent")
    parent.node("first", child)
    parent.node("second", child)
    parent.edge(START, "first")
    parent.edge("first", "second")
    parent.edge("second", END)
    async with Runtime.open(url(tmp_path), models=gateway) as rt:
        handle = await rt.start(parent.compile(), {"q": "hi"}, metadata={"tenant": "t1"})
        outcome = await handle.wait()
    assert outcome.status is RunStatus.FAILED and "budget" in str(outcome.error)
    assert len(model.calls) == 1


class CutStream:
    """A provider whose streams send 400 words, then break."""

    name = "cut"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        raise StreamInterruptedError("cut", provider=self.name)

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        for _ in range(100):
            yield TextDelta("word word word word ")
        raise StreamInterruptedError("connection reset mid-stream", provider=self.name)

    async def aclose(self) -> None:
        return None


async def test_what_a_failed_call_spent_is_recorded_priced_and_counted(tmp_path: Path) -> None:
    gateway = Gateway(
        {
            "a": ModelSpec(CutStream(), "a", retries=0, fallbacks=("b",), price=Price(1.0, 1.0)),
            "b": ModelSpec(CutStream(), "b", retries=0, price=Price(1.0, 1.0)),
        },
        budgets=[Budget(limit=1_000_000, on="tokens", per="tenant")],
    )

    async def ask(s: S, ctx: Context) -> S:
        try:
            await ctx.model("a", s["q"], stream=True)
        except NoModelAvailableError as exc:
            assert exc.usage is not None and exc.usage.output_tokens > 0
            return {"a": "failed"}
        return {"a": "answered"}

    async with Runtime.open(url(tmp_path), models=gateway) as rt:
        state = await rt.run(one_node(ask), {"q": "hi"}, metadata={"tenant": "t"})
        events = await rt.events((await rt.list_runs())[0].run_id)
    assert state["a"] == "failed"
    usage = next(e.data.usage for e in events if isinstance(e.data, EffectFinished))
    assert usage is not None and usage["output_tokens"] >= 2 * 400 / 4 * 0.9
    assert usage["cost"] == pytest.approx((usage["input_tokens"] + usage["output_tokens"]) / 1e6)
    assert gateway.budget_gate is not None
    spent = await gateway.budget_gate.ledger.spent("tenant:t", "tokens")
    assert spent == usage["input_tokens"] + usage["output_tokens"]


async def test_tokens_carry_the_last_recorded_seq_and_stop_at_their_effects_end(
    tmp_path: Path,
) -> None:
    model = ScriptedModel(["one two three four five six"], chunk=3, latency=0.05)
    gateway = Gateway({"fast": model})

    async def ask(s: S, ctx: Context) -> S:
        return {"a": (await ctx.model("fast", s["q"])).text}

    async with Runtime.open(url(tmp_path), models=gateway) as rt:
        handle = await rt.start(one_node(ask), {"q": "hi"})
        seen = [e async for e in handle.events()]
    started = next(e.seq for e in seen if e.kind == "effect_started")
    finished = next(i for i, e in enumerate(seen) if e.kind == "effect_finished")
    deltas = [(i, e) for i, e in enumerate(seen) if isinstance(e.data, ModelDelta)]
    assert deltas and all(e.seq >= started for _, e in deltas)
    assert all(i < finished for i, _ in deltas)
