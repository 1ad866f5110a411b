"""Tools from typed functions: schemas, validation, context, and ctx.tool as a journaled,
gated, bounded effect (issue 12, items 1 and 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypedDict

import anyio
import pytest
from pydantic import BaseModel

from mainspring import END, START, Context, Graph, RunStatus, Runtime
from mainspring.errors import EffectDeniedError
from mainspring.events import EffectFinished, EffectStarted
from mainspring.tools import (
    Retry,
    Tool,
    ToolArgumentsError,
    Toolbox,
    ToolContext,
    ToolFailedError,
    ToolTimeoutError,
    tool,
)

pytestmark = pytest.mark.anyio


class Order(BaseModel):
    id: str
    amount: float
    status: Literal["open", "shipped", "refunded"]


CALLS: list[tuple[str, Any]] = []


@tool
async def lookup_order(order_id: str, ctx: ToolContext, include_items: bool = False) -> Order:
    """Find an order by its id.

    Args:
        order_id: The order's id, like A-17.
        include_items: Whether to list the items too.
    """
    CALLS.append(("lookup", (order_id, ctx.idempotency_key, ctx.tenant, dict(ctx.secrets))))
    return Order(id=order_id, amount=120.0, status="open")


@tool(needs_approval=lambda args: args["amount"] > 100, secrets=["PAYMENTS_TOKEN"])
def refund(order_id: str, amount: float, ctx: ToolContext) -> dict[str, Any]:
    """Refund an order (sync: runs in a worker thread)."""
    CALLS.append(("refund", (order_id, amount, ctx.secrets.get("PAYMENTS_TOKEN"))))
    return {"refunded": amount, "order": order_id}


def test_a_function_becomes_a_described_and_typed_tool() -> None:
    spec = lookup_order.spec()
    assert spec.name == "lookup_order" and spec.description == "Find an order by its id."
    props = spec.parameters["properties"]
    assert props["order_id"] == {"type": "string", "description": "The order's id, like A-17."}
    assert props["include_items"]["default"] is False
    assert spec.parameters["required"] == ["order_id"]
    assert spec.parameters["additionalProperties"] is False
    assert "ctx" not in props  # the context is not the model's to give
    assert lookup_order.openai()["function"]["parameters"] == spec.parameters
    assert lookup_order.anthropic()["input_schema"] == spec.parameters


def test_bad_arguments_are_listed_in_words_a_model_can_act_on() -> None:
    with pytest.raises(ToolArgumentsError) as caught:
        refund.validate({"order_id": 17, "amount": "lots", "extra": 1})
    message = str(caught.value)
    assert "order_id" in message and "amount" in message and "extra" in message
    assert caught.value.for_model().startswith("error: invalid arguments for tool 'refund'")
    assert refund.validate({"order_id": "A", "amount": "12.5"}) == {"order_id": "A", "amount": 12.5}


def test_names_and_signatures_a_model_cannot_use_are_refused() -> None:
    with pytest.raises(ValueError, match="tool name"):
        Tool(lambda: None, name="has spaces")

    def anything(*args: Any) -> None: ...

    with pytest.raises(TypeError, match="name each argument"):
        tool(anything)


class S(TypedDict, total=False):
    order: str
    result: Any
    note: str


def _graph(body: Any) -> Any:
    g = Graph(S, name="tools")

    @g.node
    async def act(s: S, ctx: Context) -> S:
        result: S = await body(s, ctx)
        return result

    g.edge(START, "act")
    g.edge("act", END)
    return g.compile()


async def test_ctx_tool_is_a_journaled_effect_with_a_typed_context(tmp_path: Path) -> None:
    CALLS.clear()
    box = Toolbox([lookup_order, refund], secrets={"PAYMENTS_TOKEN": "tok-123"})

    async def body(s: S, ctx: Context) -> S:
        return {"result": await ctx.tool("lookup_order", order_id=s["order"])}

    async with Runtime.open(f"sqlite:///{tmp_path / 'r.db'}", tools=box) as rt:
        state = await rt.run(_graph(body), {"order": "A-17"}, metadata={"tenant": "acme"})
        events = await rt.events((await rt.list_runs())[0].run_id)
    assert state["result"] == {"id": "A-17", "amount": 120.0, "status": "open"}
    started = next(e.data for e in events if isinstance(e.data, EffectStarted))
    assert (started.name, started.effect_kind, started.args) == (
        "tool:lookup_order", "tool", {"order_id": "A-17"}
    )  # fmt: skip
    order_id, key, tenant, secrets = CALLS[0][1]
    assert (order_id, tenant, secrets) == ("A-17", "acme", {}) and key == started.key


async def test_a_tool_that_needs_approval_parks_and_can_be_edited(tmp_path: Path) -> None:
    CALLS.clear()
    box = Toolbox([refund], secrets={"PAYMENTS_TOKEN": "tok-123"})

    async def body(s: S, ctx: Context) -> S:
        try:
            return {"result": await ctx.tool("refund", order_id="A-1", amount=250.0)}
        except EffectDeniedError as exc:
            return {"note": f"not refunded: {exc.reason}"}

    app = _graph(body)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    async with Runtime.open(url, tools=box, graphs=[app]) as rt:
        edited = await rt.start(app, {})
        parked = await edited.wait()
        assert parked.status is RunStatus.INTERRUPTED
        ask = parked.interrupts[0].payload
        assert ask["data"] == {"tool": "refund", "args": {"order_id": "A-1", "amount": 250.0}}
        await rt.resume(edited.run_id, {"args": {"order_id": "A-1", "amount": 90.0}})
        assert (await rt.handle(edited.run_id).result())["result"]["refunded"] == 90.0
        rejected = await rt.start(app, {})
        await rejected.wait()
        await rt.resume(rejected.run_id, {"approve": False, "reason": "over the limit"})
        assert (await rt.handle(rejected.run_id).result())["note"] == (
            "not refunded: over the limit"
        )
        events = await rt.events(edited.run_id)
    assert CALLS == [("refund", ("A-1", 90.0, "tok-123"))]  # the secret, never journaled
    assert not any("tok-123" in repr(e) for e in events)


async def test_timeouts_retries_and_errors_are_bounded_and_recorded(tmp_path: Path) -> None:
    attempts: list[int] = []

    @tool(timeout=0.2)
    async def hangs() -> str:
        await anyio.sleep(30)
        return "never"

    @tool(retry=Retry(attempts=3, on=(ConnectionError,), backoff=0.01))
    async def flaky(ctx: ToolContext) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError("reset")
        return f"ok after {ctx.attempt}"

    @tool(retry=Retry(attempts=3, on=(ConnectionError,)))
    async def broken() -> str:
        raise ValueError("not retryable")

    box = Toolbox([hangs, flaky, broken])

    async def body(s: S, ctx: Context) -> S:
        out: list[str] = [await ctx.tool("flaky")]
        for name in ("hangs", "broken"):
            try:
                await ctx.tool(name)
            except (ToolTimeoutError, ToolFailedError) as exc:
                out.append(type(exc).__name__)
        return {"result": out}

    async with Runtime.open(f"sqlite:///{tmp_path / 'r.db'}", tools=box) as rt:
        with anyio.fail_after(10):
            state = await rt.run(_graph(body), {})
        events = await rt.events((await rt.list_runs())[0].run_id)
    assert state["result"] == ["ok after 3", "ToolTimeoutError", "ToolFailedError"]
    assert attempts == [1, 2, 3]
    errors = [e.data.error for e in events if isinstance(e.data, EffectFinished) and e.data.error]
    assert [e.type for e in errors] == ["ToolTimeoutError", "ToolFailedError"]
    with pytest.raises(ToolArgumentsError):
        await box.call("flaky", {"unexpected": 1})
