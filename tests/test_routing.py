"""Routing (issue 11, item 3): names and aliases, timeouts, retries with retry-after,
fallback chains (on errors, timeouts, context too long), streams that break mid-way,
degradation, and every attempt accounted. Against ScriptedModel providers."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from mainspring.models.errors import (
    AuthenticationError,
    BadRequestError,
    ContentFilteredError,
    ContextTooLongError,
    ModelError,
    ModelTimeoutError,
    NoModelAvailableError,
    OverloadedError,
    ProviderError,
    RateLimitedError,
    StreamInterruptedError,
    UnknownModelError,
)
from mainspring.models.messages import ModelRequest, ModelResponse, Usage, assistant, user
from mainspring.models.protocol import StreamEnd, StreamEvent, StreamRestart, TextDelta
from mainspring.models.providers.scripted import ScriptedModel
from mainspring.models.routing import Router
from mainspring.models.spec import ModelSpec

pytestmark = pytest.mark.anyio

REQUEST = ModelRequest("", [user("hello there")])


def spec(provider: Any, **kw: Any) -> ModelSpec:
    kw.setdefault("backoff", 0.001)
    kw.setdefault("max_backoff", 0.01)
    return ModelSpec(provider, **kw)


def failing(*errors: BaseException, then: str = "ok") -> Callable[[ModelRequest], Any]:
    """A script that raises ``errors`` in turn, then answers ``then`` for ever."""
    queue = list(errors)
    return lambda request: queue.pop(0) if queue else then


class BreakingStream(ScriptedModel):
    """Streams ``text`` and breaks with StreamInterruptedError after ``deltas`` deltas
    (for its first ``breaks`` calls)."""

    def __init__(self, text: str, *, deltas: int, breaks: int = 1, name: str = "breaking"):
        super().__init__([text], name=name, chunk=4)
        self.deltas, self.breaks, self.closed, self.streams_closed = deltas, breaks, 0, 0

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        breaking = self.breaks > 0
        self.breaks -= 1
        seen = 0
        try:
            async for event in super().stream(request):
                if breaking and seen == self.deltas:
                    raise StreamInterruptedError("connection reset", partial="x" * seen * 4)
                seen += 1
                yield event
        finally:
            self.streams_closed += 1

    async def aclose(self) -> None:
        self.closed += 1


# --- names ---------------------------------------------------------------------------


async def test_aliases_chain_to_a_model_and_unknown_names_list_the_known_ones() -> None:
    router = Router({"fast": spec(ScriptedModel())}, {"default": "cheap", "cheap": "fast"})
    assert router.resolve("default") == router.resolve("cheap") == router.resolve("fast") == "fast"
    assert router.spec("default").provider is router.spec("fast").provider
    with pytest.raises(UnknownModelError, match=r"'slow'.*models: fast; aliases: cheap, default"):
        router.resolve("slow")
    with pytest.raises(UnknownModelError):
        await router.complete("slow", REQUEST)


@pytest.mark.parametrize(
    ("models", "aliases", "degrade", "message"),
    [
        ({"m": {}}, {"a": "b", "b": "a"}, None, r"cycle: a -> b -> a"),
        ({"m": {}}, {"a": "nowhere"}, None, r"alias 'a' names 'nowhere'"),
        ({"m": {}}, {"m": "m"}, None, r"alias 'm' is also the name of a model"),
        ({"m": {"fallbacks": ("gone",)}}, {}, None, r"'m' falls back to 'gone'"),
        ({"m": {}}, {}, {"nope": "m"}, r"degrade= key 'nope'"),
        ({"m": {}}, {}, {"m": "nope"}, r"degrade\['m'\] 'nope'"),
        ({"m": {"retries": -1}}, {}, None, r"model 'm': retries=-1"),
        ({}, {}, None, r"at least one model"),
    ],
)
def test_construction_refuses_bad_names_with_the_name_at_fault(
    models: dict[str, dict[str, Any]],
    aliases: dict[str, str],
    degrade: dict[str, str] | None,
    message: str,
) -> None:
    specs = {name: spec(ScriptedModel(), **kw) for name, kw in models.items()}
    with pytest.raises(ValueError, match=message):
        Router(specs, aliases, degrade=degrade)


def test_fallback_chains_are_depth_first_each_model_once() -> None:
    p = ScriptedModel()
    router = Router(
        {
            "a": spec(p, fallbacks=("b", "c")),
            "b": spec(p, fallbacks=("d", "a")),
            "c": spec(p, fallbacks=("alias-of-d",)),
            "d": spec(p),
        },
        {"alias-of-d": "d"},
    )
    assert router.chain("a") == ("a", "b", "d", "c")
    assert router.chain("c") == ("c", "d")


async def test_request_gets_the_model_id_spec_defaults_and_the_output_cap() -> None:
    provider = ScriptedModel()
    router = Router(
        {
            "fast": spec(
                provider,
                model="gpt-4o-mini",
                params={"temperature": 0.2, "seed": 7, "top_p": 0.9},
                max_output_tokens=100,
            )
        }
    )
    asked = ModelRequest("x", [user("hi")], max_tokens=500, params={"top_p": 0.5})
    await router.complete("fast", asked)
    sent = provider.calls[-1]
    assert (sent.model, sent.temperature, sent.max_tokens) == ("gpt-4o-mini", 0.2, 100)
    assert sent.params == {"seed": 7, "top_p": 0.5}
    await router.complete("fast", ModelRequest("x", [user("hi")], temperature=1.0))
    assert (provider.calls[-1].temperature, provider.calls[-1].max_tokens) == (1.0, 100)


async def test_aclose_closes_each_distinct_provider_once() -> None:
    shared, other = BreakingStream("a", deltas=0), BreakingStream("b", deltas=0)
    router = Router({"a": spec(shared), "b": spec(shared), "c": spec(other)})
    await router.aclose()
    assert (shared.closed, other.closed) == (1, 1)


# --- retries and fallbacks -------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        OverloadedError("529 overloaded"),
        RateLimitedError("429 slow down", retry_after=0.001),
        ProviderError("502 bad gateway"),
        StreamInterruptedError("reset"),
        ModelTimeoutError("read timed out"),
        ContextTooLongError("prompt is too long"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_each_fallback_error_moves_to_the_next_model(error: ModelError) -> None:
    primary = ScriptedModel(failing(*[error] * 5), name="p")
    backup = ScriptedModel(["from backup"], name="b")
    router = Router(
        {"main": spec(primary, retries=2, fallbacks=("backup",)), "backup": spec(backup)}
    )
    response = await router.complete("main", REQUEST)
    assert response.text == "from backup"
    tries = 1 if not error.retryable else 3  # retried first when the error says it may pass
    assert len(primary.calls) == tries and len(backup.calls) == 1
    outcomes = [(a["model"], a["outcome"], a["error"]) for a in response.attempts]
    assert outcomes == [("main", "error", type(error).__name__)] * tries + [("backup", "ok", None)]


@pytest.mark.parametrize(
    "error",
    [AuthenticationError("401 bad key"), BadRequestError("400 bad"), ContentFilteredError("no")],
    ids=lambda e: type(e).__name__,
)
async def test_errors_no_model_can_help_raise_at_once(error: ModelError) -> None:
    primary = ScriptedModel(failing(error))
    backup = ScriptedModel()
    router = Router({"main": spec(primary, fallbacks=("backup",)), "backup": spec(backup)})
    with pytest.raises(type(error)):
        await router.complete("main", REQUEST)
    assert (len(primary.calls), len(backup.calls)) == (1, 0)


async def test_retries_back_off_then_succeed_on_the_same_model() -> None:
    provider = ScriptedModel(failing(OverloadedError("busy"), OverloadedError("busy")))
    router = Router({"m": spec(provider, retries=2)}, rng=random.Random(1))
    response = await router.complete("m", REQUEST)
    assert response.text == "ok" and len(provider.calls) == 3
    assert [a["outcome"] for a in response.attempts] == ["error", "error", "ok"]


async def test_retry_after_is_waited_at_least() -> None:
    provider = ScriptedModel(failing(RateLimitedError("429", retry_after=0.2)))
    router = Router({"m": spec(provider, backoff=0.001, max_backoff=5.0)})
    started = time.perf_counter()
    response = await router.complete("m", REQUEST)
    waited = time.perf_counter() - started
    assert response.text == "ok" and len(provider.calls) == 2
    assert 0.2 <= waited < 3.0


async def test_retry_after_beyond_max_backoff_goes_to_the_fallback_at_once() -> None:
    primary = ScriptedModel(failing(RateLimitedError("429", retry_after=30.0)))
    router = Router(
        {
            "m": spec(primary, retries=3, max_backoff=1.0, fallbacks=("b",)),
            "b": spec(ScriptedModel(["fallback"])),
        }
    )
    started = time.perf_counter()
    response = await router.complete("m", REQUEST)
    assert time.perf_counter() - started < 0.9  # far less than the 30 s asked for
    assert response.text == "fallback" and len(primary.calls) == 1


async def test_timeout_cancels_the_slow_model_and_falls_back() -> None:
    slow = ScriptedModel(latency=5.0)
    router = Router(
        {"m": spec(slow, timeout=0.05, retries=0, fallbacks=("b",)), "b": spec(ScriptedModel())}
    )
    started = time.perf_counter()
    response = await router.complete("m", REQUEST)
    assert time.perf_counter() - started < 2.0 and response.text == "ok"
    assert slow.cancelled == 1
    first = response.attempts[0]
    assert (first["outcome"], first["error"]) == ("error", "ModelTimeoutError")
    assert "within 0.05 s" in first["message"]


async def test_prompt_longer_than_the_window_skips_to_a_model_that_fits() -> None:
    small, medium, large = ScriptedModel(name="s"), ScriptedModel(name="m"), ScriptedModel(["big"])
    router = Router(
        {
            "small": spec(small, context_window=10, fallbacks=("medium", "large")),
            "medium": spec(medium, context_window=50),
            "large": spec(large, context_window=100_000),
        }
    )
    long = ModelRequest("", [user("word " * 200)])
    response = await router.complete("small", long)
    assert response.text == "big" and (small.calls, medium.calls) == ([], [])
    assert [(a["model"], a["outcome"]) for a in response.attempts] == [
        ("small", "skipped"),
        ("large", "ok"),  # the first in the chain whose window fits: medium is passed over
    ]
    assert "exceeds window 10" in response.attempts[0]["message"]


async def test_context_too_long_prefers_a_fallback_with_a_larger_window() -> None:
    primary = ScriptedModel(failing(ContextTooLongError("too long")))
    smaller, larger = ScriptedModel(name="smaller"), ScriptedModel(["larger"])
    router = Router(
        {
            "m": spec(primary, context_window=1000, fallbacks=("smaller", "larger")),
            "smaller": spec(smaller, context_window=800),
            "larger": spec(larger, context_window=200_000),
        }
    )
    response = await router.complete("m", REQUEST)
    assert response.text == "larger" and smaller.calls == []
    assert [(a["model"], a["outcome"]) for a in response.attempts] == [
        ("m", "error"),
        ("larger", "ok"),
    ]


async def test_exhausted_chain_names_every_failure() -> None:
    router = Router(
        {
            "a": spec(
                ScriptedModel(failing(OverloadedError("a is down"))), retries=0, fallbacks=("b",)
            ),
            "b": spec(ScriptedModel(failing(ProviderError("b is down"))), retries=0),
        }
    )
    with pytest.raises(NoModelAvailableError, match=r"a: OverloadedError \(a is down\).*b: Prov"):
        await router.complete("a", REQUEST)
    try:
        await router.complete("a", REQUEST)
    except NoModelAvailableError as exc:
        assert [a["model"] for a in exc.attempts] == ["a", "b"]


async def test_degrade_to_a_cheaper_model_or_a_canned_answer() -> None:
    down = ScriptedModel(failing(*[OverloadedError("down")] * 10))
    canned = ModelResponse(assistant("Sorry, try again later."), model="canned")
    router = Router(
        {
            "big": spec(down, retries=0),
            "cheap": spec(ScriptedModel(["cheap answer"])),
            "x": spec(down, retries=0),
        },
        degrade={"big": "cheap", "x": canned},
    )
    cheap = await router.complete("big", REQUEST)
    assert cheap.text == "cheap answer"
    assert cheap.attempts[-1] == {**cheap.attempts[-1], "model": "cheap", "degraded": True}
    assert "degraded" not in cheap.attempts[0]
    sorry = await router.complete("x", REQUEST)
    assert sorry.text == "Sorry, try again later."
    assert sorry.attempts[-1]["outcome"] == "degraded"
    assert router.degradation("x") is canned


async def test_usage_is_the_sum_of_every_known_usage() -> None:
    priced = Usage(input_tokens=10, output_tokens=5)
    router = Router(
        {
            "a": spec(ScriptedModel(failing(OverloadedError("x"))), retries=0, fallbacks=("b",)),
            "b": spec(ScriptedModel([ModelResponse(assistant("hi"), usage=priced)])),
        }
    )
    response = await router.complete("a", REQUEST)
    assert response.usage == priced  # the failed request reported none
    assert response.attempts[-1]["usage"]["input_tokens"] == 10
    assert response.latency is not None and response.latency > 0


# --- streams -----------------------------------------------------------------------------


async def collect(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in events]


async def test_stream_breaking_mid_way_restarts_on_the_fallback() -> None:
    primary = BreakingStream("the first answer that breaks", deltas=2, breaks=99)
    router = Router(
        {
            "m": spec(primary, retries=0, fallbacks=("b",)),
            "b": spec(ScriptedModel(["second answer"], chunk=5)),
        }
    )
    events = await collect(router.stream("m", REQUEST))
    restart = next(i for i, e in enumerate(events) if isinstance(e, StreamRestart))
    before = "".join(e.text for e in events[:restart] if isinstance(e, TextDelta))
    after = "".join(e.text for e in events[restart:] if isinstance(e, TextDelta))
    assert before == "the firs" and after == "second answer"
    marker = events[restart]
    assert isinstance(marker, StreamRestart) and marker.model == "b"
    assert "StreamInterruptedError" in marker.reason
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.response.text == "second answer"
    first = end.response.attempts[0]
    assert (first["model"], first["error"]) == ("m", "StreamInterruptedError")
    assert first["usage"]["output_tokens"] == 2 and first["usage"]["estimated"]
    assert end.response.usage.output_tokens >= 2 + 2 and end.response.ttft is not None


async def test_stream_breaking_mid_way_is_retried_on_the_same_model_with_a_restart() -> None:
    provider = BreakingStream("abcdefghijkl", deltas=1, breaks=1)
    router = Router({"m": spec(provider, retries=1)})
    events = await collect(router.stream("m", REQUEST))
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "TextDelta",
        "StreamRestart",
        "TextDelta",
        "TextDelta",
        "TextDelta",
        "StreamEnd",
    ]


async def test_stream_failing_before_its_first_delta_falls_back_silently() -> None:
    router = Router(
        {
            "m": spec(ScriptedModel(failing(OverloadedError("x"))), retries=0, fallbacks=("b",)),
            "b": spec(ScriptedModel(["fine"])),
        }
    )
    events = await collect(router.stream("m", REQUEST))
    assert not any(isinstance(e, StreamRestart) for e in events)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "fine"


async def test_first_token_timeout_falls_back() -> None:
    slow = ScriptedModel(latency=5.0)
    router = Router(
        {
            "m": spec(slow, first_token_timeout=0.05, retries=0, fallbacks=("b",)),
            "b": spec(ScriptedModel(["quick"])),
        }
    )
    with anyio.fail_after(3):
        events = await collect(router.stream("m", REQUEST))
    assert slow.cancelled == 1
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.response.text == "quick"
    assert end.response.attempts[0]["error"] == "ModelTimeoutError"


async def test_stream_exhausted_raises_and_degrades_with_a_restart() -> None:
    broken = BreakingStream("partial answer", deltas=1, breaks=99)
    canned = ModelResponse(assistant("canned"))
    router = Router(
        {"m": spec(broken, retries=0), "n": spec(broken, retries=0)}, degrade={"n": canned}
    )
    with pytest.raises(NoModelAvailableError):
        await collect(router.stream("m", REQUEST))
    events = await collect(router.stream("n", REQUEST))
    assert [type(e).__name__ for e in events] == [
        "TextDelta",
        "StreamRestart",
        "TextDelta",
        "StreamEnd",
    ]
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.response.attempts[-1]["outcome"] == "degraded"


async def test_stream_closed_early_closes_the_provider_stream() -> None:
    provider = BreakingStream("a long answer in many pieces", deltas=0, breaks=0)
    router = Router({"m": spec(provider)})
    stream = router.stream("m", REQUEST)
    first = await anext(stream)
    assert isinstance(first, TextDelta) and provider.streams_closed == 0
    await stream.aclose()  # type: ignore[attr-defined]
    assert provider.streams_closed == 1


async def test_stream_degrades_to_a_cheaper_model() -> None:
    down = ScriptedModel(failing(*[OverloadedError("down")] * 10))
    router = Router(
        {"big": spec(down, retries=0), "cheap": spec(ScriptedModel(["cheap stream"]))},
        degrade={"big": "cheap"},
    )
    events = await collect(router.stream("big", REQUEST))
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.response.text == "cheap stream"
    assert [a.get("degraded", False) for a in end.response.attempts] == [False, True]
