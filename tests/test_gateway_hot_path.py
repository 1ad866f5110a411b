"""The gateway's fast paths (W9) behave exactly like the general paths they shortcut:
plain message dicts, calls without options, prices looked up once, one effect function
per output type for ``ctx.model``, routing's timeouts without ``anyio.fail_after``."""

from __future__ import annotations

from typing import Any, TypedDict

import anyio
import msgspec
import pytest
from pydantic import BaseModel

from mainspring import END, START, Context, Graph, Runtime
from mainspring.events import EffectStarted
from mainspring.models import Gateway, ModelSpec, Price, ScriptedModel
from mainspring.models.errors import NoModelAvailableError, OverloadedError
from mainspring.models.messages import (
    Message,
    ModelRequest,
    as_messages,
    message_from_mapping,
    user,
)
from mainspring.models.pricing import PriceTable
from mainspring.models.routing import Router
from mainspring.store import store_from_url

pytestmark = pytest.mark.anyio


def _converted(m: dict[str, Any]) -> Message | str:
    """What the general path (msgspec.convert) makes of a message dict, or "error"."""
    content = m.get("content", "")
    data = {**m, "content": [{"type": "text", "text": content}] if content else []}
    if not isinstance(content, str):
        data = dict(m)
    try:
        return msgspec.convert(data, Message)
    except msgspec.ValidationError:
        return "error"


@pytest.mark.parametrize(
    "m",
    [
        {"role": "user", "content": "hi"},
        {"role": "system", "content": ""},
        {"role": "user", "name": "ada"},  # two keys, but not role and content
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
        {"role": "bogus", "content": "x"},
        {"role": ["user"], "content": "x"},
        {"content": "x", "name": "n"},
        {"role": "assistant", "content": None},
        {"role": "user", "content": [{"type": "text", "text": "a"}]},
        # The text-parts shape an agent's state keeps (to_builtins of a Message).
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": ""}]},
        {
            "role": "tool",
            "content": [{"type": "text", "text": "x"}],
            "tool_call_id": "c",
            "name": "t",
        },
        {"role": "assistant", "content": []},
        {"role": "tool", "content": [{"type": "text", "text": "x"}], "tool_call_id": 7},
        {"role": "user", "content": [{"type": "text", "text": 3}]},
        {"role": "user", "content": [{"type": "text", "text": "a", "extra": 1}]},
        {"role": "user", "content": [{"type": "image", "url": "https://x/y.png"}]},
        {"role": "user", "content": [{"type": "text"}]},
        {"role": "user", "content": ["a"]},
        {"role": "user", "content": [{"type": "text", "text": "a"}], "extra": "kept out"},
        {"role": "bogus", "content": [{"type": "text", "text": "a"}]},
        {"role": "assistant", "content": [{"type": "tool_call", "id": "c", "name": "t"}]},
    ],
)
def test_a_message_dict_becomes_what_the_general_conversion_makes(m: dict[str, Any]) -> None:
    expected = _converted(m)
    try:
        got: Message | str = as_messages([m])[0]
    except TypeError:
        got = "error"
    assert got == expected
    try:  # the agent loop's path (a state dict, no list around it)
        one: Message | str = message_from_mapping(m)
    except TypeError:
        one = "error"
    assert one == expected


async def test_a_call_without_options_asks_the_same_request_as_one_with_defaults() -> None:
    model = ScriptedModel(["a", "b"])
    gateway = Gateway({"fast": ModelSpec(model, "tiny")})
    plain = await gateway.complete("fast", [{"role": "user", "content": "hi"}])
    spelled = await gateway.complete("fast", [user("hi")], stream=None, cache=False)
    assert (plain.text, spelled.text) == ("a", "b")
    assert model.calls[0] == model.calls[1] == ModelRequest("tiny", [user("hi")])


async def test_prices_are_looked_up_once_and_again_when_the_table_changes() -> None:
    gateway = Gateway({"fast": ScriptedModel(["ok", "ok"])}, prices={"fast": Price(1e6, 0)})
    first = await gateway.complete("fast", "hi")
    gateway.accountant.prices = PriceTable({"fast": Price(2e6, 0)}, defaults=False)
    second = await gateway.complete("fast", "hi")
    assert first.usage.input_tokens == second.usage.input_tokens > 0
    assert second.usage.cost == 2 * first.usage.cost  # type: ignore[operator]


async def test_unpriced_attempts_leave_the_answer_priced_at_the_model_asked_for() -> None:
    broken = ScriptedModel([OverloadedError("busy")])
    models = {
        "big": ModelSpec(broken, retries=0, fallbacks=("free",), price=Price(1e6, 0)),
        "free": ModelSpec(ScriptedModel(["ok"])),
    }
    response = await Gateway(models).complete("big", "hi")
    assert [a["model"] for a in response.attempts] == ["big", "free"]
    assert response.usage.cost == pytest.approx(response.usage.input_tokens)


class _S(TypedDict, total=False):
    answer: str


class Intent(BaseModel):
    intent: str


async def test_ctx_model_reuses_one_effect_function_per_output_type() -> None:
    gateway = Gateway({"fast": ScriptedModel(['{"intent": "refund"}'] * 4)})
    g = Graph(_S, name="ask")

    @g.node
    async def ask(s: _S, ctx: Context) -> _S:
        plain = await ctx.model("fast", "hi")
        typed = await ctx.model("fast", "hi", output=Intent)
        assert isinstance(typed.output, Intent)
        return {"answer": plain.text}

    g.edge(START, "ask")
    g.edge("ask", END)
    async with Runtime(store_from_url("memory://"), models=gateway) as rt:
        assert await rt.run(g.compile(), {}) == {"answer": '{"intent": "refund"}'}
        assert await rt.run(g.compile(), {}) == {"answer": '{"intent": "refund"}'}
    assert set(gateway._effect_fns) == {None, Intent}
    assert gateway._effect_fn(None) is gateway._effect_fns[None]  # streamed calls too: the
    # sink travels with the call, so the function stays one object (and holds no cycle)


async def test_a_caller_cancelling_is_not_taken_for_the_models_timeout() -> None:
    slow = ScriptedModel(["late"], latency=5.0)
    router = Router({"slow": ModelSpec(slow, timeout=10.0, retries=0)})
    with anyio.move_on_after(0.05) as outer:
        await router.complete("slow", ModelRequest("", [user("hi")]))
    assert outer.cancelled_caught and slow.cancelled == 1


async def test_a_slow_stream_times_out_and_a_cancelled_one_is_cancelled() -> None:
    slow = ScriptedModel(["late"], latency=5.0)
    router = Router({"slow": ModelSpec(slow, first_token_timeout=0.05, retries=0)})
    with anyio.fail_after(2), pytest.raises(NoModelAvailableError, match="ModelTimeoutError"):
        async for _ in router.stream("slow", ModelRequest("", [user("hi")])):
            pass
    patient = Router({"slow": ModelSpec(ScriptedModel(["late"], latency=5.0), retries=0)})
    with anyio.move_on_after(0.05) as outer:
        async for _ in patient.stream("slow", ModelRequest("", [user("hi")])):
            pass
    assert outer.cancelled_caught


def test_a_tool_specs_json_is_made_once_and_is_what_to_builtins_makes() -> None:
    from mainspring.models.gateway import _tools_json
    from mainspring.models.messages import ToolSpec

    params = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    spec = ToolSpec("search", "Search the web.", params)
    first = _tools_json([spec])
    assert first == msgspec.to_builtins([spec])
    again = _tools_json([spec])
    assert again[0] is first[0] and again is not first  # the spec's JSON kept; a new list
    other = ToolSpec("search", "Search the web.", {"type": "object", "properties": {}})
    assert _tools_json([other]) == msgspec.to_builtins([other])  # another spec: its own


async def test_a_model_calls_recorded_messages_are_the_messages_sent() -> None:

    class Echo(TypedDict, total=False):
        out: str

    async def node(state: Echo, ctx: Context) -> dict[str, Any]:
        system = Message("system", [])
        first = await ctx.model("m", [system, user("one")])
        second = await ctx.model("m", [system, user("one"), first.message, user("two")])
        return {"out": second.text}

    g = Graph(Echo)
    g.node("ask", node)
    g.edge(START, "ask")
    g.edge("ask", END)
    gateway = Gateway({"m": ScriptedModel(["first", "second"])})
    async with Runtime(store_from_url("memory://"), models=gateway) as rt:
        run_id = (await rt.run_outcome(g.compile(), {})).run_id
        events = await rt.events(run_id)
    started = [e.data.args for e in events if isinstance(e.data, EffectStarted)]
    assert [m.get("content", []) for m in started[1]["messages"]] == [
        [],
        [{"type": "text", "text": "one"}],
        [{"type": "text", "text": "first"}],
        [{"type": "text", "text": "two"}],
    ]
    assert started[0]["messages"] == started[1]["messages"][:2]
