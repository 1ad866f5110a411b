"""Speculative execution (issue 11, item 3): the first candidate whose value passes its
check wins, the rest are cancelled, and every candidate is accounted."""

from __future__ import annotations

import time

import anyio
import pytest

from mainspring.models.errors import NoModelAvailableError, OverloadedError
from mainspring.models.messages import ModelRequest, ModelResponse, user
from mainspring.models.providers.scripted import ScriptedModel
from mainspring.models.routing import Router
from mainspring.models.spec import ModelSpec
from mainspring.models.speculate import Candidate, SpeculationError, speculate

pytestmark = pytest.mark.anyio

REQUEST = ModelRequest("", [user("what is the capital of France")])


def two_models(small_latency: float, large_latency: float, small_says: str = "Paris") -> Router:
    small = ScriptedModel([small_says], name="small", latency=small_latency)
    large = ScriptedModel(["Paris, France"], name="large", latency=large_latency)
    return Router({"small": ModelSpec(small, retries=0), "large": ModelSpec(large, retries=0)})


def provider(router: Router, name: str) -> ScriptedModel:
    found = router.spec(name).provider
    assert isinstance(found, ScriptedModel)
    return found


def ask(router: Router, name: str) -> Candidate[ModelResponse]:
    return Candidate(
        name, lambda: router.complete(name, REQUEST), check=lambda r: "Paris" in r.text
    )


async def test_the_cheap_path_wins_and_the_expensive_one_is_cancelled_and_accounted() -> None:
    router = two_models(0.01, 5.0)
    started = time.perf_counter()
    result = await speculate([ask(router, "small"), ask(router, "large")])
    assert time.perf_counter() - started < 2.0
    assert (result.winner, result.value.text) == ("small", "Paris")
    assert provider(router, "large").cancelled == 1
    small, large = result.records
    assert (small.status, large.status) == ("finished", "cancelled")
    assert small.usage is not None and result.usage == small.usage
    assert [a["outcome"] for a in result.attempts()] == ["ok", "cancelled"]


async def test_a_value_that_fails_its_check_leaves_the_race_to_the_others() -> None:
    router = two_models(0.01, 0.1, small_says="I am not sure")
    result = await speculate([ask(router, "small"), ask(router, "large")])
    assert (result.winner, result.value.text) == ("large", "Paris, France")
    small, large = result.records
    assert (small.status, large.status) == ("rejected", "finished")
    assert small.usage is not None and large.usage is not None
    assert result.usage == small.usage + large.usage  # the rejected answer was paid for too


async def test_async_checks_and_plain_values() -> None:
    async def cache_miss() -> str | None:
        return None

    async def compute() -> str | None:
        await anyio.sleep(0.01)
        return "computed"

    async def is_hit(value: str | None) -> bool:
        await anyio.sleep(0)
        return value is not None

    result = await speculate(
        [Candidate("cache", cache_miss, check=is_hit), Candidate("compute", compute)]
    )
    assert (result.winner, result.value) == ("compute", "computed")
    assert [r.status for r in result.records] == ["rejected", "finished"]


async def test_a_delayed_candidate_is_never_started_when_an_earlier_one_wins() -> None:
    router = two_models(0.01, 0.01)
    late = Candidate("large", lambda: router.complete("large", REQUEST), delay=2.0)
    with anyio.fail_after(1.5):
        result = await speculate([ask(router, "small"), late])
    assert result.records[1].status == "skipped"
    assert provider(router, "large").calls == []


async def test_none_passing_raises_with_each_reason() -> None:
    async def broken() -> str:
        raise OverloadedError("upstream down")

    async def wrong() -> str:
        return "no"

    with pytest.raises(SpeculationError) as caught:
        await speculate([Candidate("a", broken), Candidate("b", wrong, check=lambda v: v == "yes")])
    message = str(caught.value)
    assert "a: failed (OverloadedError: upstream down)" in message
    assert "b: rejected" in message
    assert isinstance(caught.value, NoModelAvailableError)
    assert [a["outcome"] for a in caught.value.attempts] == ["error", "error"]


async def test_candidates_need_distinct_names() -> None:
    async def one() -> int:
        return 1

    with pytest.raises(ValueError, match="distinct names"):
        await speculate([Candidate("x", one), Candidate("x", one)])
