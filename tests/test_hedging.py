"""Hedging (issue 11, item 3): a second request after a delay taken from the observed
latencies, the first answer wins, the loser is cancelled and both are accounted, and
hedges stay under their share of calls."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mainspring.models.errors import NoModelAvailableError, OverloadedError
from mainspring.models.hedging import HedgeBudget, LatencyTracker, hedge_delay
from mainspring.models.messages import ModelRequest, ModelResponse, user
from mainspring.models.providers.scripted import ScriptedModel
from mainspring.models.routing import Router
from mainspring.models.spec import Hedge, ModelSpec

pytestmark = pytest.mark.anyio

REQUEST = ModelRequest("", [user("how long will this take")])


def latencies(*seconds: float) -> Callable[[], float]:
    """Per-call latencies in turn, the last repeated."""
    queue = list(seconds)
    return lambda: queue.pop(0) if len(queue) > 1 else queue[0]


def heavy_tail(seed: int, fast: float, slow: float, share: float) -> Callable[[], float]:
    """``share`` of the calls take ~``slow`` seconds, the rest ~``fast`` (seeded)."""
    rng = random.Random(seed)
    return lambda: (slow if rng.random() < share else fast) * rng.uniform(1.0, 1.2)


def router_for(provider: ScriptedModel, hedge: Hedge | None, **kw: object) -> Router:
    return Router({"m": ModelSpec(provider, hedge=hedge, backoff=0.001, **kw)})  # type: ignore[arg-type]


# --- the latency tracker and the budget -----------------------------------------------


@given(st.lists(st.floats(0, 10), min_size=1, max_size=60), st.floats(0, 1))
def test_tracker_quantile_is_the_nearest_rank_of_the_last_size_latencies(
    values: list[float], q: float
) -> None:
    tracker = LatencyTracker(size=16)
    for value in values:
        tracker.observe(value)
    kept = sorted(values[-16:])
    rank = min(len(kept), max(1, -int(-q * len(kept) // 1)))  # ceil(q * n), at least 1
    assert tracker.quantile(q) == kept[rank - 1]
    assert (len(tracker), tracker.count) == (len(kept), len(values))


def test_hedge_delay_waits_for_warmup_and_respects_the_floor() -> None:
    tracker = LatencyTracker()
    hedge = Hedge(quantile=0.5, warmup=3, min_delay=0.01)
    for _ in range(2):
        tracker.observe(0.001)
    assert hedge_delay(hedge, tracker) is None
    tracker.observe(0.001)
    assert hedge_delay(hedge, tracker) == 0.01  # the median is below the floor
    assert hedge_delay(Hedge(delay=0.3), LatencyTracker()) == 0.3  # a fixed delay needs no data


@given(st.floats(0.0, 1.0), st.lists(st.booleans(), max_size=200))
def test_budget_never_lets_hedges_exceed_their_share(max_extra: float, wants: list[bool]) -> None:
    budget = HedgeBudget(max_extra)
    for want in wants:
        budget.add_call()
        if want:
            budget.try_spend()
        assert budget.hedges <= max_extra * budget.calls + 1e-9


# --- hedged calls ------------------------------------------------------------------------


async def test_hedge_cuts_a_slow_call_and_the_loser_is_cancelled_and_accounted() -> None:
    provider = ScriptedModel(["answer"], latency=latencies(5.0, 0.01))
    router = router_for(provider, Hedge(delay=0.05, max_extra=1.0))
    started = time.perf_counter()
    response = await router.complete("m", REQUEST)
    assert time.perf_counter() - started < 2.0  # not the 5 s of the first request
    assert provider.cancelled == 1 and len(provider.calls) == 2
    by_outcome = {a["outcome"]: a for a in response.attempts}
    loser, winner = by_outcome["cancelled"], by_outcome["ok"]
    assert (len(response.attempts), loser["hedge"], winner["hedge"]) == (2, False, True)
    assert loser["usage"]["estimated"] and loser["usage"]["input_tokens"] > 0
    assert response.usage.input_tokens == (
        winner["usage"]["input_tokens"] + loser["usage"]["input_tokens"]
    )
    assert response.usage.output_tokens == winner["usage"]["output_tokens"]
    assert response.usage.estimated


async def test_primary_answering_first_cancels_the_hedge() -> None:
    provider = ScriptedModel(["answer"], latency=latencies(0.2, 5.0))
    router = router_for(provider, Hedge(delay=0.02, max_extra=1.0))
    with anyio.fail_after(3):
        response = await router.complete("m", REQUEST)
    assert provider.cancelled == 1
    assert sorted((a["outcome"], a["hedge"]) for a in response.attempts) == [
        ("cancelled", True),
        ("ok", False),
    ]


async def test_a_failed_primary_leaves_the_race_to_its_hedge() -> None:
    turns: Iterator[str | BaseException] = iter([OverloadedError("primary broke"), "hedged answer"])
    provider = ScriptedModel(lambda request: next(turns), latency=latencies(0.15, 0.3))
    router = router_for(provider, Hedge(delay=0.02, max_extra=1.0), retries=0)
    with anyio.fail_after(3):
        response = await router.complete("m", REQUEST)
    assert response.text == "hedged answer"
    assert sorted((a["outcome"], a["hedge"]) for a in response.attempts) == [
        ("error", False),
        ("ok", True),
    ]


async def test_both_requests_failing_is_an_exhausted_chain_naming_both() -> None:
    provider = ScriptedModel([OverloadedError("down")], latency=0.1)
    router = router_for(provider, Hedge(delay=0.02, max_extra=1.0), retries=0)
    with pytest.raises(NoModelAvailableError) as caught:
        await router.complete("m", REQUEST)
    assert sorted(bool(a["hedge"]) for a in caught.value.attempts) == [False, True]


async def test_hedges_stay_under_max_extra_of_calls() -> None:
    provider = ScriptedModel(["answer"], latency=0.01)
    router = router_for(provider, Hedge(delay=0.0, max_extra=0.25))
    responses: list[ModelResponse] = []
    for _ in range(40):
        responses.append(await router.complete("m", REQUEST))
    hedges = sum(a["hedge"] for r in responses for a in r.attempts)
    assert hedges == router.hedge_budgets["m"].hedges
    assert 9 <= hedges <= 10  # would be 40 without the budget
    assert len(provider.calls) == 40 + hedges


async def test_no_hedging_during_warmup_then_hedging_at_the_observed_quantile() -> None:
    provider = ScriptedModel(["answer"], latency=latencies(*[0.005] * 10, 5.0, 0.005))
    router = router_for(provider, Hedge(quantile=0.9, warmup=10, max_extra=1.0))
    for _ in range(10):
        response = await router.complete("m", REQUEST)
        assert len(response.attempts) == 1
    with anyio.fail_after(3):  # the 5 s request is hedged after ~the p90 of 5 ms
        response = await router.complete("m", REQUEST)
    assert sorted((a["outcome"], a["hedge"]) for a in response.attempts) == [
        ("cancelled", False),
        ("ok", True),
    ]
    assert provider.cancelled == 1


async def test_hedging_cuts_the_tail_of_a_heavy_tailed_upstream() -> None:
    """200 calls, 5% of them 20x slower: hedged, far fewer calls are slow, for <= 10% extra."""
    slow_after = 0.06

    async def slow_calls(hedge: Hedge | None) -> tuple[int, int]:
        provider = ScriptedModel(["x"], latency=heavy_tail(7, fast=0.004, slow=0.1, share=0.05))
        router = router_for(provider, hedge)
        slow = 0

        async def caller() -> None:
            nonlocal slow
            for _ in range(25):
                started = time.perf_counter()
                await router.complete("m", REQUEST)
                slow += time.perf_counter() - started > slow_after

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(caller)
        return slow, len(provider.calls) - 200

    plain, _ = await slow_calls(None)
    hedged, extra = await slow_calls(Hedge(quantile=0.9, warmup=20, max_extra=0.1))
    assert plain >= 4  # ~10 expected from the seeded draws
    assert hedged <= plain // 2
    assert extra <= 20
