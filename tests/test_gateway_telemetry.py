"""What a gateway call leaves for telemetry: GenAI span attributes (tokens, cost, the
model's reply when capture is on), token and cost metrics by model and tenant, and the
time to first token of a streamed call (issue 11, item 6)."""

from __future__ import annotations

import json
from typing import Any, TypedDict

import pytest

from mainspring import END, START, Context, Graph, Runtime
from mainspring.models import Gateway, ModelSpec, Price, ScriptedModel, ToolCall
from mainspring.store import MemoryStore
from mainspring.telemetry import Capture
from mainspring.telemetry.metrics.prometheus import JournalMetrics
from mainspring.telemetry.spans.derive import derive_spans

pytestmark = pytest.mark.anyio


class S(TypedDict, total=False):
    q: str
    a: str


def _graph() -> Any:
    g = Graph(S, name="ask")

    @g.node
    async def ask(s: S, ctx: Context) -> S:
        first = await ctx.model("fast", s["q"])
        await ctx.model("fast", "and a tool?", stream=True)
        return {"a": first.text}

    g.edge(START, "ask")
    g.edge("ask", END)
    return g.compile()


def _gateway() -> Gateway:
    call = ToolCall("c1", "lookup", {"id": 7})
    model = ScriptedModel(["hello there", [call]], chunk=3)
    return Gateway({"fast": ModelSpec(model, "tiny-1", price=Price(input=2.0, output=8.0))})


async def test_model_spans_carry_genai_usage_cost_and_the_reply() -> None:
    store = MemoryStore()
    async with Runtime(store, models=_gateway()) as rt:
        await rt.run(_graph(), {"q": "hi"}, metadata={"tenant": "acme"})
        run_id = (await rt.list_runs())[0].run_id
        events = await rt.events(run_id)
    spans = [s for s in derive_spans(events, Capture(enabled=True)) if s.name.startswith("chat")]
    assert [s.name for s in spans] == ["chat fast", "chat fast"]
    first, second = (s.attributes for s in spans)
    assert first["gen_ai.operation.name"] == "chat"
    assert first["gen_ai.response.model"] == "tiny-1"
    assert first["gen_ai.usage.output_tokens"] == 2
    tokens_in = first["gen_ai.usage.input_tokens"]
    assert isinstance(tokens_in, int)
    assert first["mainspring.cost_usd"] == pytest.approx((tokens_in * 2.0 + 2 * 8.0) / 1e6)
    reply = json.loads(str(first["gen_ai.output.messages"]))
    assert reply[0]["parts"] == [{"type": "text", "content": "hello there"}]
    tool = json.loads(str(second["gen_ai.output.messages"]))[0]
    assert tool["parts"] == [
        {"type": "tool_call", "id": "c1", "name": "lookup", "arguments": {"id": 7}}
    ]
    assert tool["finish_reason"] == "tool_call"
    assert isinstance(second["mainspring.time_to_first_token_s"], float)


async def test_token_cost_and_ttft_metrics_by_model_and_tenant() -> None:
    store = MemoryStore()
    metrics = JournalMetrics(store=store)
    async with Runtime(metrics.instrument(store), listeners=[metrics], models=_gateway()) as rt:
        await rt.run(_graph(), {"q": "hi"}, metadata={"tenant": "acme"})
    registry = metrics.registry

    def sample(name: str, **labels: str) -> float:
        found = registry.get_sample_value(name, labels)
        return 0.0 if found is None else found

    assert sample("mainspring_tokens_total", model="tiny-1", tenant="acme", direction="output") > 2
    assert sample("mainspring_cost_usd_total", model="tiny-1", tenant="acme") > 0
    assert sample("mainspring_model_ttft_seconds_count", model="tiny-1") == 1
