"""Budgets on the effect gate, with real runs on a SQLite store: each action (stop, warn,
fallback, ask) and what the journal keeps of it; scopes, windows, steps and seconds;
the loop breaker; and what a budget check costs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import pytest

from mainspring import END, START, Context, Graph, RunStatus, Runtime
from mainspring.engine.effects import EffectCall
from mainspring.engine.gate import Effect
from mainspring.errors import EffectDeniedError
from mainspring.events import EffectDecided, EffectFinished, EffectStarted, Event
from mainspring.models.budget_gate import BudgetGate
from mainspring.models.budget_ledger_memory import MemoryLedger
from mainspring.models.budgets import Budget, denial_error
from mainspring.models.errors import BudgetExceededError, LoopDetectedError
from mainspring.models.loop_breaker import LoopBreaker
from mainspring.models.spec import Price
from tests.budget_graphs import agent_graph

pytestmark = pytest.mark.anyio


class Three(TypedDict, total=False):
    a: str
    b: str
    c: str


class Looping(TypedDict, total=False):
    done: int
    why: str


def decided(events: list[Event]) -> list[tuple[str, str, str]]:
    return [
        (e.data.decision, e.data.hook, e.data.reason)
        for e in events
        if isinstance(e.data, EffectDecided)
    ]


def called_models(events: list[Event]) -> list[str]:
    return [e.data.args["model"] for e in events if isinstance(e.data, EffectStarted)]


def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


async def test_stop_denies_the_call_that_would_pass_the_budget(tmp_path: Path) -> None:
    ledger = MemoryLedger()
    gate = BudgetGate([Budget(250, on="tokens", per="run")], ledger)
    async with Runtime.open(url(tmp_path), gates=[gate]) as rt:
        out = await rt.run(agent_graph(), {}, run_id="r")
        events = await rt.events("r")
    assert len(out["models"]) == 2, "two calls of ~110 tokens fit in 250; the third does not"
    ((decision, hook, reason),) = decided(events)
    assert (decision, hook) == ("deny", "budgets")
    assert (
        reason
        == "budget 'tokens per run' exceeded for run:r: 200 of 250 tokens spent, this call needs ~110"
    )
    assert out["stopped"] == reason
    assert await ledger.spent("run:r", "tokens") == 200, "settled with the reported usage"
    denied = EffectDeniedError("model:x", reason, "budgets")
    error = denial_error(denied)
    assert isinstance(error, BudgetExceededError) and "250" in str(error)
    assert denial_error(EffectDeniedError("x", "a policy said no")) is None
    failed = [e.data for e in events if isinstance(e.data, EffectFinished) and e.data.error]
    assert failed[0].error is not None and failed[0].error.type == "EffectDeniedError"


async def test_warn_lets_the_calls_go_and_the_journal_keeps_the_warning(tmp_path: Path) -> None:
    gate = BudgetGate([Budget(2, on="calls", per="run", action="warn")])
    async with Runtime.open(url(tmp_path), gates=[gate]) as rt:
        out = await rt.run(agent_graph(), {"calls": 4}, run_id="r")
        events = await rt.events("r")
    assert len(out["models"]) == 4 and "stopped" not in out
    warnings = decided(events)
    assert [(d, h) for d, h, _ in warnings] == [("after", "budgets")] * 2
    assert warnings[0][2] == (
        "budget 'calls per run' exceeded for run:r: 3 of 2 calls spent; warned, the call goes on"
    )
    assert gate.warnings == {"calls per run": 2}


async def test_fallback_rewrites_to_the_cheaper_model_until_a_hard_limit(tmp_path: Path) -> None:
    ledger = MemoryLedger()
    budgets = [
        Budget(2, on="calls", per="run", action="fallback", fallback_model="small"),
        Budget(4, on="calls", per="run", name="hard cap"),
    ]
    async with Runtime.open(url(tmp_path), gates=[BudgetGate(budgets, ledger)]) as rt:
        out = await rt.run(agent_graph(), {}, run_id="r")
        events = await rt.events("r")
    assert out["models"] == ["x", "x", "small", "small"], "the model each call reached"
    # the journal records the arguments each call went with (the denied fifth as asked)
    assert called_models(events) == ["x", "x", "small", "small", "x"]
    assert [(d, h) for d, h, _ in decided(events)] == [
        ("rewrite", "budgets"),
        ("rewrite", "budgets"),
        ("deny", "budgets"),
    ]
    assert decided(events)[0][2].endswith("; falling back to 'small'")
    assert out["stopped"].startswith("budget 'hard cap' exceeded for run:r: 4 of 4 calls")
    assert await ledger.spent("run:r", "calls") == 4, "the cheaper calls still count"


async def test_fallback_accounts_cost_at_the_cheaper_models_price(tmp_path: Path) -> None:
    prices = {"x": Price(input=100_000.0, output=100_000.0), "small": Price(1_000.0, 1_000.0)}
    ledger = MemoryLedger()
    budget = Budget(30.0, on="cost", per="run", action="fallback", fallback_model="small")
    gate = BudgetGate([budget], ledger, price=prices.get)
    async with Runtime.open(url(tmp_path), gates=[gate]) as rt:
        out = await rt.run(agent_graph(), {"calls": 4}, run_id="r")
    # usage reports no cost: the estimate stays counted (x: 11 $ a call, small: 0.11 $)
    assert out["models"] == ["x", "x", "small", "small"]
    assert await ledger.spent("run:r", "cost") == pytest.approx(2 * 11.0 + 2 * 0.11)


async def test_ask_parks_the_run_and_an_approval_lets_one_call_go(tmp_path: Path) -> None:
    ledger = MemoryLedger()
    gate = BudgetGate([Budget(1, on="calls", per="user", action="ask")], ledger)
    async with Runtime.open(url(tmp_path), gates=[gate]) as rt:
        handle = await rt.start(agent_graph(), {"calls": 3}, run_id="r", metadata={"user": "ann"})
        parked = await handle.wait()
        assert parked.status is RunStatus.INTERRUPTED
        (pending,) = parked.interrupts
        assert pending.payload["approve"]["hook"] == "budgets"
        figures = pending.payload["data"]["budget"]
        assert figures["scope"] == "user:ann" and (figures["spent"], figures["limit"]) == (1, 1)
        assert await ledger.spent("user:ann", "calls") == 1
        await rt.resume("r", True)
        parked = await handle.wait()
        assert parked.status is RunStatus.INTERRUPTED, "the next call asks again"
        assert await ledger.spent("user:ann", "calls") == 2, "the approved call was counted"
        await rt.resume("r", False)
        out = await handle.result()
        events = await rt.events("r")
    assert len(out["models"]) == 2 and out["stopped"] == "a person did not approve it"
    assert [d for d, _, _ in decided(events)] == ["approve", "approved", "approve", "rejected"]
    assert decided(events)[0][2].startswith("budget 'calls per user' exceeded for user:ann")


async def test_runs_of_one_user_or_thread_share_a_budget_and_others_are_not_under_it(
    tmp_path: Path,
) -> None:
    budgets = [Budget(3, on="calls", per="user"), Budget(4, on="calls", per="thread")]
    app = agent_graph()
    async with Runtime.open(url(tmp_path), gates=[BudgetGate(budgets)]) as rt:
        first = await rt.run(app, {"calls": 2}, run_id="a", metadata={"user": "ann"})
        second = await rt.run(app, {"calls": 2}, run_id="b", metadata={"user": "ann"})
        other = await rt.run(app, {"calls": 5}, run_id="c", metadata={"user": "bob"}, thread="t")
        more = await rt.run(app, {"calls": 5}, run_id="d", thread="t")
        nobody = await rt.run(app, {"calls": 5}, run_id="e")
    assert (len(first["models"]), len(second["models"])) == (2, 1)
    assert len(other["models"]) == 3 and "calls per user" in other["stopped"]
    assert len(more["models"]) == 1 and "calls per thread" in more["stopped"]
    assert len(nobody["models"]) == 5, "no user, no thread: under neither budget"


async def test_a_windowed_budget_starts_again_in_the_next_window(tmp_path: Path) -> None:
    now = [86400.0 * 100 + 10]
    gate = BudgetGate([Budget(2, on="calls", per="tenant", window=86400)], clock=lambda: now[0])
    app = agent_graph()
    meta = {"tenant": "t1"}
    async with Runtime.open(url(tmp_path), gates=[gate]) as rt:
        today = await rt.run(app, {"calls": 3}, run_id="a", metadata=meta)
        now[0] += 86400
        tomorrow = await rt.run(app, {"calls": 3}, run_id="b", metadata=meta)
    assert len(today["models"]) == 2 and len(tomorrow["models"]) == 2
    assert "tenant:t1/86400s" in today["stopped"]


async def test_steps_and_seconds_are_enforced_at_the_next_gated_call(tmp_path: Path) -> None:
    now = [1000.0]
    g = Graph(Three, name="steps")
    for node in ("a", "b", "c"):

        async def call(s: Three, ctx: Context, node: str = node) -> dict[str, Any]:
            now[0] += 4
            try:
                await ctx.step(f"work-{node}", lambda: node)
            except EffectDeniedError as exc:
                return {node: exc.reason}
            return {node: "done"}

        g.node(call, name=node)
    g.edge(START, "a")
    g.edge("a", "b")
    g.edge("b", "c")
    g.edge("c", END)
    app = g.compile()
    steps = BudgetGate([Budget(2, on="steps")])
    async with Runtime.open(url(tmp_path), gates=[steps]) as rt:
        out = await rt.run(app, {}, run_id="s")
    assert (out["a"], out["b"]) == ("done", "done")
    assert out["c"] == "budget 'steps per run' exceeded for run:s: 3 of 2 steps spent"
    seconds = BudgetGate([Budget(5, on="seconds", per="tenant")], clock=lambda: now[0])
    async with Runtime.open(url(tmp_path), gates=[seconds]) as rt:
        out = await rt.run(app, {}, run_id="t", metadata={"tenant": "t1"})
    assert (out["a"], out["b"]) == ("done", "done"), "first seen at a; b is 4 s later"
    assert out["c"].startswith("budget 'seconds per tenant' exceeded for tenant:t1: 8 of 5")


async def test_only_the_counted_kinds_are_counted() -> None:
    ledger = MemoryLedger()
    models_only = BudgetGate([Budget(1, on="calls", per="run", name="m")], ledger)
    with_tools = BudgetGate(
        [Budget(1, on="calls", per="run", kinds=("model", "tool"), name="mt")], MemoryLedger()
    )
    tool = Effect("tool", "search", {"q": "x"}, "k1", "r", "n", 0, 0, 0, 1)
    assert await models_only.before(tool) is None
    assert await models_only.before(msgspec_replace(tool, key="k2")) is None
    assert await ledger.spent("run:r", "calls") == 0
    assert await with_tools.before(tool) is None
    assert await with_tools.before(msgspec_replace(tool, key="k2")) is not None


def msgspec_replace(effect: Effect, **changes: Any) -> Effect:
    import msgspec

    return msgspec.structs.replace(effect, **changes)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"limit": -1}, "cannot be negative"),
        ({"limit": float("inf")}, "finite number"),
        ({"limit": 10, "on": "dollars"}, "use one of"),
        ({"limit": 10, "per": "org"}, "use one of"),
        ({"limit": 10, "action": "fallback"}, "needs fallback_model="),
        ({"limit": 10, "fallback_model": "small"}, "only with action='fallback'"),
        ({"limit": 10, "window": 0}, "seconds > 0"),
        ({"limit": 10, "on": "steps", "per": "tenant"}, "per run only"),
        ({"limit": 10, "on": "seconds", "window": 60}, "takes no window"),
        (
            {"limit": 10, "on": "seconds", "action": "fallback", "fallback_model": "s"},
            "cannot fall back",
        ),
        ({"limit": 10, "kinds": ()}, "name the effect kinds"),
    ],
)
def test_a_budget_that_cannot_mean_anything_is_refused_when_made(
    kwargs: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValueError, match=says.replace("(", r"\(")):
        Budget(**kwargs)


def test_budgets_sharing_a_counter_must_count_the_same_kinds() -> None:
    with pytest.raises(ValueError, match="give them the same kinds="):
        BudgetGate([Budget(5), Budget(9, kinds=("model", "tool"))])


async def test_the_loop_breaker_stops_a_run_repeating_one_call(tmp_path: Path) -> None:
    g = Graph(Looping, name="loop")

    @g.node
    async def loop(s: Looping, ctx: Context) -> dict[str, Any]:
        done = 0
        for i in range(10):
            query = "same" if i < 8 else "new"  # the loop never gets to a new question
            try:
                await ctx.effect(EffectCall("tool", "search", _search, kwargs={"q": query}))
            except EffectDeniedError as exc:
                return {"done": done, "why": exc.reason}
            done += 1
        return {"done": done}

    g.edge(START, "loop")
    g.edge("loop", END)
    async with Runtime.open(url(tmp_path), gates=[LoopBreaker(max_repeats=3)]) as rt:
        out = await rt.run(g.compile(), {}, run_id="l")
        events = await rt.events("l")
    assert out["done"] == 3
    assert out["why"].startswith("loop detected: 'search' was called 3 times with the same")
    assert [(d, h) for d, h, _ in decided(events)] == [("deny", "loop-breaker")]
    error = denial_error(EffectDeniedError("search", out["why"]))
    assert isinstance(error, LoopDetectedError)


async def _search(q: str) -> str:
    return f"results for {q}"


def test_the_loop_breaker_catches_a_cycle_within_its_window() -> None:
    breaker = LoopBreaker(max_repeats=2, window=4)
    verdicts = []
    for i, name in enumerate(["a", "b", "a", "b", "a"]):
        effect = Effect("tool", name, {}, f"k{i}", "r", "n", 0, 0, i, 1)
        verdicts.append(breaker.before(effect) is None)
    assert verdicts == [True, True, True, True, False]
    with pytest.raises(ValueError, match="window >= max_repeats"):
        LoopBreaker(max_repeats=3, window=2)
