"""Graphs and a stand-in model for the budget tests: a node that calls "model:x" the way
the gateway's ``ctx.model`` does (an effect of kind "model"), until the gate says no."""

from __future__ import annotations

from typing import Any, TypedDict

import anyio

from mainspring import END, START, Context, Graph
from mainspring.engine.effects import EffectCall
from mainspring.engine.gate import Effect
from mainspring.errors import EffectDeniedError
from mainspring.models.budgets import CallEstimate

MAX_TOKENS = 100


class Agent(TypedDict, total=False):
    calls: int  # the most calls to make
    models: list[str]  # the model each call reached
    stopped: str  # why the gate stopped the loop


def model_args(text: str, model: str = "x", max_tokens: int = MAX_TOKENS) -> dict[str, Any]:
    """A model call's arguments as the gateway gives them to the gate."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "tools": [],
        "max_tokens": max_tokens,
        "params": {"temperature": 0},
    }


def input_tokens(args: dict[str, Any]) -> int:
    """What the stand-in model bills as input: the default estimate's own count."""
    effect = Effect("model", "model:x", args, "k", "r", "n", 0, 0, 0, 1)
    return int(CallEstimate()(effect)["input_tokens"])


async def fake_model(
    model: str, messages: list[dict[str, Any]], max_tokens: int | None = None, **_: Any
) -> dict[str, Any]:
    """A model that answers after a millisecond and reports usage as a provider does."""
    await anyio.sleep(0.001)  # a call takes time: the runs of a test overlap
    args = {"messages": messages}
    output = (max_tokens or MAX_TOKENS) - len(messages[-1]["content"]) % 40  # 61 to 100
    return {
        "text": f"answer from {model}",
        "model": model,
        "usage": {
            "input_tokens": input_tokens(args),
            "output_tokens": output,
            "cached_tokens": 0,
            "reasoning_tokens": 0,
            "cost": None,
            "estimated": False,
            "model": model,
        },
    }


def agent_graph(name: str = "agent") -> Any:
    """One node: call the model in a loop (``calls`` times at most) until denied."""
    g = Graph(Agent, name=name)

    @g.node
    async def loop(s: Agent, ctx: Context) -> dict[str, Any]:
        models: list[str] = []
        for i in range(s.get("calls", 1_000)):
            call = EffectCall("model", "model:x", fake_model, kwargs=model_args(f"question {i}"))
            try:
                answer = await ctx.effect(call)
            except EffectDeniedError as exc:
                return {"models": models, "stopped": exc.reason}
            models.append(answer["model"])
        return {"models": models}

    g.edge(START, "loop")
    g.edge("loop", END)
    return g.compile()
