"""The model gateway in runs: ``ctx.model`` is a journaled effect, tokens stream to live
subscribers without a journal write per token, structured output is validated and
repaired, the response cache answers opt-in calls, and usage is accounted (issue 11)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import pytest
from pydantic import BaseModel

from mainspring import END, START, Context, EventKind, Graph, RunStatus, Runtime
from mainspring.errors import RunStateError
from mainspring.events import EffectFinished, EffectStarted, ModelDelta
from mainspring.models import (
    Budget,
    BudgetExceededError,
    Gateway,
    LoopDetectedError,
    MemoryCache,
    ModelResponse,
    ModelSpec,
    OutputValidationError,
    Price,
    ScriptedModel,
    StreamEnd,
    TextDelta,
    ToolCall,
    user,
)

pytestmark = pytest.mark.anyio


class S(TypedDict, total=False):
    question: str
    answer: str
    intent: str
    response: dict[str, Any]


class Intent(BaseModel):
    intent: str
    confidence: float


def ask_graph(**options: Any) -> Any:
    g = Graph(S, name="ask")

    @g.node
    async def ask(s: S, ctx: Context) -> S:
        response = await ctx.model("fast", s["question"], **options)
        return {"answer": response.text, "response": response.to_dict()}

    g.edge(START, "ask")
    g.edge("ask", END)
    return g.compile()


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


async def test_a_model_call_is_a_journaled_effect_with_usage_and_cost(tmp_path: Path) -> None:
    model = ScriptedModel(["four"])
    gateway = Gateway({"fast": ModelSpec(model, "tiny-1", price=Price(input=1.0, output=2.0))})
    async with Runtime.open(sqlite_url(tmp_path), models=gateway) as rt:
        state = await rt.run(ask_graph(), {"question": "2+2?"})
        events = await rt.events((await rt.list_runs())[0].run_id)
    assert state["answer"] == "four"
    started = [e.data for e in events if isinstance(e.data, EffectStarted)]
    finished = [e.data for e in events if isinstance(e.data, EffectFinished)]
    assert [s.name for s in started] == ["model:fast"] and started[0].effect_kind == "model"
    assert started[0].args["messages"][0]["content"][0]["text"] == "2+2?"
    usage = finished[0].usage
    assert usage is not None and usage["input_tokens"] > 0 and usage["output_tokens"] == 1
    assert usage["cost"] == pytest.approx(
        (usage["input_tokens"] * 1.0 + usage["output_tokens"] * 2.0) / 1e6
    )
    assert usage["model"] == "tiny-1"
    assert model.calls[0].model == "tiny-1"  # the provider's own model id


async def test_a_resumed_run_never_pays_twice_for_the_same_answer(tmp_path: Path) -> None:
    model = ScriptedModel(["first answer", "second answer"])
    gateway = Gateway({"fast": model})
    g = Graph(S, name="ask-then-approve")

    @g.node
    async def ask(s: S, ctx: Context) -> S:
        response = await ctx.model("fast", s["question"])
        approved = await ctx.interrupt({"send": response.text})
        return {"answer": response.text if approved else "withdrawn"}

    g.edge(START, "ask")
    g.edge("ask", END)
    app = g.compile()
    async with Runtime.open(sqlite_url(tmp_path), models=gateway, graphs=[app]) as rt:
        handle = await rt.start(app, {"question": "hi"})
        assert (await handle.wait()).status is RunStatus.INTERRUPTED
    async with Runtime.open(sqlite_url(tmp_path), models=gateway, graphs=[app]) as rt:
        resumed = await rt.resume(handle.run_id, True)
        state = await resumed.result()
    assert state["answer"] == "first answer"
    assert len(model.calls) == 1  # the node ran twice, the model once


async def test_tokens_stream_to_subscribers_and_the_journal_keeps_one_message(
    tmp_path: Path,
) -> None:
    text = "the quick brown fox jumps over the lazy dog"
    gateway = Gateway({"fast": ScriptedModel([text], chunk=4, token_delay=0.002)})
    app = ask_graph()
    async with Runtime.open(sqlite_url(tmp_path), models=gateway) as rt:
        handle = await rt.start(app, {"question": "fox?"})
        live = [e async for e in handle.events()]
        journal = await rt.events(handle.run_id)
    deltas = [e.data for e in live if isinstance(e.data, ModelDelta)]
    assert "".join(d.text for d in deltas) == text and len(deltas) == len(text) // 4 + 1
    assert all(e.kind is not EventKind.MODEL_DELTA for e in journal)  # nothing per token
    finished = [e.data for e in journal if isinstance(e.data, EffectFinished)]
    assert finished[0].result["message"]["content"][0]["text"] == text
    # A subscriber that joins after the run sees the whole answer, once.
    async with Runtime.open(sqlite_url(tmp_path), models=gateway) as rt:
        late = [e async for e in rt.handle(handle.run_id).events()]
    assert not any(e.kind is EventKind.MODEL_DELTA for e in late)
    assert [e.seq for e in late] == [e.seq for e in journal]


async def test_structured_output_is_validated_and_repaired(tmp_path: Path) -> None:
    model = ScriptedModel(['{"intent": "refund"}', {"intent": "refund", "confidence": 0.9}])
    gateway = Gateway({"fast": model})
    g = Graph(S, name="classify")

    @g.node
    async def classify(s: S, ctx: Context) -> S:
        response = await ctx.model("fast", s["question"], output=Intent)
        assert isinstance(response.output, Intent)
        return {"intent": response.output.intent}

    g.edge(START, "classify")
    g.edge("classify", END)
    async with Runtime.open(sqlite_url(tmp_path), models=gateway) as rt:
        state = await rt.run(g.compile(), {"question": "I want my money back"})
    assert state["intent"] == "refund"
    assert len(model.calls) == 2  # one repair
    repair = model.calls[1].messages[-1].text
    assert "confidence" in repair  # the model was told what was wrong


async def test_structured_output_that_never_validates_fails_the_call_clearly() -> None:
    gateway = Gateway({"fast": ScriptedModel(["not json at all"])}, repairs=1)
    with pytest.raises(OutputValidationError, match="Intent"):
        await gateway.complete("fast", "classify this", output=Intent)


async def test_the_response_cache_answers_an_equal_call_without_the_model() -> None:
    model = ScriptedModel(["cached answer", "fresh answer"])
    gateway = Gateway({"fast": model}, cache=MemoryCache())
    first = await gateway.complete("fast", "same question", cache=True)
    second = await gateway.complete("fast", "same question", cache=True)
    other = await gateway.complete("fast", "same question", cache=True, temperature=0.5)
    uncached = await gateway.complete("fast", "same question")
    assert (first.text, second.text, other.text) == ("cached answer",) * 2 + ("fresh answer",)
    assert second.cached and second.usage.cost == 0.0 and not first.cached
    assert uncached.text == "fresh answer" and len(model.calls) == 3


async def test_tool_calls_come_back_typed() -> None:
    call = ToolCall("call_1", "lookup_order", {"order_id": "A-17"})
    gateway = Gateway({"fast": ScriptedModel([[call]])})
    tools = [{"name": "lookup_order", "parameters": {"type": "object", "properties": {}}}]
    response = await gateway.complete("fast", [user("where is A-17?")], tools=tools)
    assert response.tool_calls == [call] and response.finish_reason == "tool_calls"
    streamed: list[dict[str, Any]] = []
    gateway2 = Gateway({"fast": ScriptedModel([[call]])})
    await gateway2.complete("fast", "where?", tools=tools, on_delta=lambda **f: streamed.append(f))
    partials = [f["partial"] for f in streamed if "tool_call" in f]
    assert partials[-1] == {"order_id": "A-17"}


async def test_ctx_model_without_a_gateway_says_how_to_get_one(tmp_path: Path) -> None:
    async with Runtime.open(sqlite_url(tmp_path)) as rt:
        handle = await rt.start(ask_graph(), {"question": "hi"})
        outcome = await handle.wait()
    assert outcome.status is RunStatus.FAILED
    assert RunStateError.__name__ in str(outcome.error) and "models=Gateway" in str(outcome.error)


async def test_a_response_round_trips_through_the_journal() -> None:
    response = await Gateway({"fast": ScriptedModel(["x"])}).complete("fast", "hi")
    assert ModelResponse.from_dict(response.to_dict()) == response


async def test_a_budget_stops_ctx_model_and_says_it_was_the_budget(tmp_path: Path) -> None:
    g = Graph(S, name="chatty")

    @g.node
    async def chat(s: S, ctx: Context) -> S:
        try:
            for i in range(100):
                await ctx.model("fast", f"message {i}", max_tokens=10)
        except BudgetExceededError as exc:
            return {"answer": str(exc)}
        return {"answer": "never stopped"}

    g.edge(START, "chat")
    g.edge("chat", END)
    model = ScriptedModel(["a short answer"])
    budget = Budget(limit=3, on="calls", per="tenant")
    gateway = Gateway({"fast": model}, budgets=[budget])
    async with Runtime.open(sqlite_url(tmp_path), models=gateway) as rt:
        state = await rt.run(g.compile(), {}, metadata={"tenant": "acme"})
    assert state["answer"].startswith(
        "budget 'calls per tenant' exceeded for tenant:acme: 3 of 3 calls"
    )
    assert len(model.calls) == 3


async def test_a_budget_falls_back_to_a_cheaper_model_through_the_gate(tmp_path: Path) -> None:
    big, small = ScriptedModel(["big answer"]), ScriptedModel(["small answer"])
    budget = Budget(limit=1, on="calls", per="run", action="fallback", fallback_model="small")
    gateway = Gateway({"fast": big, "small": small}, budgets=[budget])
    g = Graph(S, name="two-calls")

    @g.node
    async def two(s: S, ctx: Context) -> S:
        first = await ctx.model("fast", "one")
        second = await ctx.model("fast", "two")
        return {"answer": f"{first.text} / {second.text}"}

    g.edge(START, "two")
    g.edge("two", END)
    async with Runtime.open(sqlite_url(tmp_path), models=gateway) as rt:
        state = await rt.run(g.compile(), {})
    assert state["answer"] == "big answer / small answer"


async def test_the_loop_breaker_stops_a_run_repeating_one_call(tmp_path: Path) -> None:
    gateway = Gateway({"fast": ScriptedModel(["same"])}, loop_breaker=3)
    g = Graph(S, name="loop")

    @g.node
    async def loop(s: S, ctx: Context) -> S:
        try:
            for _ in range(10):
                await ctx.model("fast", "the same question")
        except LoopDetectedError as exc:
            return {"answer": str(exc)}
        return {"answer": "no loop seen"}

    g.edge(START, "loop")
    g.edge("loop", END)
    async with Runtime.open(sqlite_url(tmp_path), models=gateway) as rt:
        state = await rt.run(g.compile(), {})
    assert state["answer"].startswith("loop detected")


async def test_caches_are_scoped_by_tenant_and_cut_answers_are_not_cached() -> None:
    model = ScriptedModel(["for acme", "for globex", "again"])
    gateway = Gateway({"fast": model}, cache=MemoryCache())
    acme = await gateway.complete("fast", "hello", cache=True, tenant="acme")
    globex = await gateway.complete("fast", "hello", cache=True, tenant="globex")
    again = await gateway.complete("fast", "hello", cache=True, tenant="acme")
    assert (acme.text, globex.text, again.text) == ("for acme", "for globex", "for acme")
    with pytest.raises(ValueError, match="semantic_cache"):
        await gateway.complete("fast", "hello", cache="semantic")
    with pytest.raises(ValueError, match="TTL"):
        await gateway.complete("fast", "hello", cache="yes please")


@pytest.mark.slow
async def test_the_semantic_cache_answers_a_paraphrase_but_not_a_negation() -> None:
    pytest.importorskip("onnxruntime", reason="the local embedding model needs .[embeddings]")
    from mainspring.models import LocalEmbeddings, SemanticCache

    model = ScriptedModel(["cancelled", "kept", "fresh"])
    semantic: SemanticCache[ModelResponse] = SemanticCache(LocalEmbeddings())
    gateway = Gateway({"fast": model}, cache=MemoryCache(), semantic_cache=semantic)
    first = await gateway.complete("fast", "Please cancel my order", cache="semantic")
    paraphrase = await gateway.complete("fast", "please cancel my order!", cache="semantic")
    negation = await gateway.complete("fast", "Do not cancel my order", cache="semantic")
    assert (first.text, paraphrase.text, negation.text) == ("cancelled", "cancelled", "kept")
    assert paraphrase.cached and not negation.cached and len(model.calls) == 2


async def test_api_keys_never_reach_the_journal_or_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real HTTP provider with a key, streamed and failing over: the key is in the
    requests the server saw, and nowhere in the store's file, the events or the logs."""
    from mainspring.models import OpenAIChat
    from tests.wire_server import Reply, WireServer

    secret = "sk-proj-Th1sIsTheSecretKeyN0bodyMayLog"
    completion = Reply.file("openai_chat_completion.json")
    with WireServer().on(
        "/v1/chat/completions", Reply.error("openai_errors.json", "invalid_api_key"), completion
    ) as server:
        provider = OpenAIChat(base_url=f"{server.base_url}/v1", api_key=secret)
        gateway = Gateway({"fast": ModelSpec(provider, "gpt-4o-mini", retries=0)})
        caplog.set_level("DEBUG")
        async with Runtime.open(sqlite_url(tmp_path), models=gateway) as rt:
            failed = await rt.start(ask_graph(stream=False), {"question": "hi"})
            outcome = await failed.wait()
            state = await rt.run(ask_graph(), {"question": "hi"})
            events = [e for r in await rt.list_runs() for e in await rt.events(r.run_id)]
        await gateway.aclose()
        seen = [r.headers.get("authorization") for r in server.requests]
    assert outcome.status is RunStatus.FAILED and "AuthenticationError" in str(outcome.error)
    assert state["answer"]
    assert seen and all(h == f"Bearer {secret}" for h in seen)
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert secret.encode() not in stored and secret[-12:].encode() not in stored
    assert not any(secret[-12:] in repr(e) for e in events)
    assert secret[-12:] not in caplog.text and secret[-12:] not in str(outcome.error)


async def test_a_budget_stop_degrades_to_the_canned_answer_when_one_is_given(
    tmp_path: Path,
) -> None:
    from mainspring.models import assistant

    canned = ModelResponse(assistant("We are busy; a person will answer soon."))
    model = ScriptedModel(["a real answer"])
    gateway = Gateway(
        {"fast": model},
        budgets=[Budget(limit=1, on="calls", per="run")],
        degrade={"fast": canned},
    )
    g = Graph(S, name="degrade")

    @g.node
    async def two(s: S, ctx: Context) -> S:
        first = await ctx.model("fast", "one")
        second = await ctx.model("fast", "two")
        return {"answer": f"{first.text} / {second.text}"}

    g.edge(START, "two")
    g.edge("two", END)
    async with Runtime.open(sqlite_url(tmp_path), models=gateway) as rt:
        state = await rt.run(g.compile(), {})
    assert state["answer"] == "a real answer / We are busy; a person will answer soon."
    assert len(model.calls) == 1


async def test_stream_yields_deltas_then_the_accounted_response_and_caches_it() -> None:
    model = ScriptedModel(["streamed words arrive"], chunk=5)
    gateway = Gateway({"fast": ModelSpec(model, "m1", price=Price(1.0, 1.0))}, cache=MemoryCache())
    events = [e async for e in gateway.stream("fast", "go", cache=True)]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "streamed words arrive"
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.response.usage.cost is not None
    assert end.response.ttft is not None and end.response.ttft <= (end.response.latency or 0)
    again = [e async for e in gateway.stream("fast", "go", cache=True)]
    assert isinstance(again[-1], StreamEnd) and again[-1].response.cached
    assert len(model.calls) == 1
    with pytest.raises(TypeError, match="on_delta"):
        [e async for e in gateway.stream("fast", "go", output=Intent)]


async def test_partial_structured_output_streams_as_it_forms() -> None:
    answer: dict[str, Any] = {"intent": "refund", "confidence": 0.75}
    gateway = Gateway({"fast": ScriptedModel([answer], chunk=6)})
    partials: list[Any] = []
    response = await gateway.complete(
        "fast", "classify", output=Intent, on_delta=lambda **f: partials.append(f.get("partial"))
    )
    assert response.output == Intent(**answer)
    snapshots = [dict(p) for p in partials if p]
    assert snapshots[0] != snapshots[-1] and snapshots[-1] == answer
    assert any("intent" in p and "confidence" not in p for p in snapshots)
