"""W12: an agent turn's orchestration overhead against LangGraph's prebuilt ReAct agent and
the OpenAI Agents SDK, on the same script with models that answer instantly.

The script, for all three: the user asks, the model calls one tool (``lookup``, async,
returns at once), the model answers. One run = two model turns and one tool call; the
models take no time, so the time of a run is the framework's own: building the prompt,
offering the tools, parsing and validating the call, running the tool, feeding its
result back, recording what happened.

* Mainspring: ``Agent`` on ``Runtime.open("memory://")`` (every model and tool call a
  journaled effect through the gate; the ``ScriptedModel``-like ``InstantModel`` below
  behind the gateway), ``await agent.run(rt, question)``.
* LangGraph: ``create_react_agent`` (langgraph.prebuilt) with a chat model that answers
  at once (``InstantChat``, a ``BaseChatModel``), no checkpointer, ``ainvoke``.
* OpenAI Agents SDK: ``Agent`` with a ``Model`` that answers at once (``InstantModel``),
  tracing disabled, ``Runner.run``.

Sampled in interleaved rounds after warm-up (harness.interleave); reported per agent turn
(a run's time / 2). Target: Mainspring's overhead >= 10x less than both, in one run.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import AsyncIterator
from typing import Any

from mainspring import Runtime
from mainspring.agents import Agent
from mainspring.models import (
    Gateway,
    Message,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCall,
    Usage,
)
from mainspring.models.protocol import StreamEvent
from mainspring.tools import tool

from harness import US, Result, Samples, Settings, async_sampler, at_least, interleave, paired

QUESTION = "Where is order A-17?"
ANSWER = "Order A-17 has shipped."
TURNS = 2  # model turns per run
TARGET = 10.0


# -- Mainspring ---------------------------------------------------------------------------


class InstantModel:
    """A ModelProvider answering at once: a tool call first, the answer once a tool replied.
    It reports its usage, as providers do (the gateway would count tokens otherwise)."""

    name: str = "instant"
    usage = Usage(input_tokens=40, output_tokens=10)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        if request.messages[-1].role == "tool":
            answer = Message("assistant", [TextPart(ANSWER)])
            return ModelResponse(answer, model=request.model, usage=self.usage)
        call = ToolCall("call_1", "lookup", {"order": "A-17"})
        return ModelResponse(
            Message("assistant", [call]), model=request.model, finish_reason="tool_calls",
            usage=self.usage,
        )  # fmt: skip

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        raise NotImplementedError("W12 does not stream")
        yield  # type: ignore[unreachable]  # a generator, as the protocol's stream is

    async def aclose(self) -> None:
        return None


@tool
async def lookup(order: str) -> str:
    """Where an order stands.

    Args:
        order: the order's id
    """
    return "shipped"


def mainspring_agent() -> tuple[Agent, Gateway]:
    agent = Agent("support", "instant", "Answer questions about orders.", tools=[lookup])
    return agent, Gateway({"instant": InstantModel()})


# -- LangGraph ----------------------------------------------------------------------------


def langgraph_agent() -> Any:
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.tools import tool as lc_tool

    with warnings.catch_warnings():  # moved to langchain.agents in 1.0; still shipped
        warnings.simplefilter("ignore")
        from langgraph.prebuilt import create_react_agent

    class InstantChat(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "instant"

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

        def _answer(self, messages: list[BaseMessage]) -> ChatResult:
            if isinstance(messages[-1], ToolMessage):
                message = AIMessage(content=ANSWER)
            else:
                call = {"name": "lookup", "args": {"order": "A-17"}, "id": "call_1"}
                message = AIMessage(content="", tool_calls=[{**call, "type": "tool_call"}])
            return ChatResult(generations=[ChatGeneration(message=message)])

        def _generate(self, messages: list[BaseMessage], *a: Any, **k: Any) -> ChatResult:
            return self._answer(messages)

        async def _agenerate(self, messages: list[BaseMessage], *a: Any, **k: Any) -> ChatResult:
            return self._answer(messages)  # at once: the default would hop to a thread

    @lc_tool("lookup")
    async def lc_lookup(order: str) -> str:
        """Where an order stands."""
        return "shipped"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_react_agent(
            InstantChat(), [lc_lookup], prompt="Answer questions about orders."
        )


# -- OpenAI Agents SDK ----------------------------------------------------------------------


def openai_agent() -> tuple[Any, Any]:
    from agents import Agent as OAgent
    from agents import RunConfig, Usage, function_tool
    from agents.items import ModelResponse as OResponse
    from agents.models.interface import Model
    from openai.types.responses import (
        ResponseFunctionToolCall,
        ResponseOutputMessage,
        ResponseOutputText,
    )

    class InstantOpenAIModel(Model):
        async def get_response(
            self, system_instructions: Any, input: Any, *a: Any, **k: Any
        ) -> Any:
            last = input[-1] if isinstance(input, list) else {}
            if isinstance(last, dict) and last.get("type") == "function_call_output":
                text = ResponseOutputText(type="output_text", text=ANSWER, annotations=[])
                out: Any = ResponseOutputMessage(
                    id="msg_1", type="message", role="assistant", status="completed", content=[text]
                )
            else:
                out = ResponseFunctionToolCall(
                    type="function_call", call_id="call_1", name="lookup",
                    arguments='{"order": "A-17"}', id="fc_1",
                )  # fmt: skip
            return OResponse(output=[out], usage=Usage(), response_id=None)

        def stream_response(self, *a: Any, **k: Any) -> Any:
            raise NotImplementedError("W12 does not stream")

    @function_tool
    async def oa_lookup(order: str) -> str:
        """Where an order stands."""
        return "shipped"

    oa_lookup.name = "lookup"
    agent = OAgent(
        name="support",
        instructions="Answer questions about orders.",
        tools=[oa_lookup],
        model=InstantOpenAIModel(),
    )
    return agent, RunConfig(tracing_disabled=True)


# -- the workload ---------------------------------------------------------------------------


async def run(settings: Settings) -> list[Result]:
    try:
        lg = langgraph_agent()
        oa_agent, oa_config = openai_agent()
    except ImportError as exc:
        from harness import skipped

        return [skipped("W12", "us/turn", f"install the bench extra ({exc.name} is missing)")]
    from agents import Runner

    agent, gateway = mainspring_agent()

    async with Runtime.open("memory://", models=gateway, tools=agent.toolbox) as rt:

        async def ours() -> None:
            result = await agent.run(rt, QUESTION)
            assert result.text == ANSWER, result

        async def langgraph() -> None:
            state = await lg.ainvoke({"messages": [("user", QUESTION)]})
            assert state["messages"][-1].content == ANSWER

        async def openai_agents() -> None:
            result = await Runner.run(oa_agent, QUESTION, run_config=oa_config)
            assert result.final_output == ANSWER

        for fn in (ours, langgraph, openai_agents):
            await fn()
        # The three imports leave a large heap every gc.collect() of the harness would
        # walk: set it aside, for all sides alike, while measuring.
        gc.collect()
        gc.freeze()
        try:
            calls, reps = settings.pick((100, 7), (300, 21))
            samples = await interleave(
                {
                    "mainspring": async_sampler(ours, calls, TURNS),
                    "langgraph": async_sampler(langgraph, settings.pick(20, 60), TURNS),
                    "openai-agents": async_sampler(openai_agents, settings.pick(20, 60), TURNS),
                },
                reps=reps,
                warmup=2,
            )
        finally:
            gc.unfreeze()
    return [_result("W12", samples, "langgraph"), _result("W12-oai", samples, "openai-agents")]


def _result(name: str, s: dict[str, Samples], anchor: str) -> Result:
    ours, theirs = s["mainspring"], s[anchor]
    result = Result(
        name,
        ours.best * US,
        theirs.best * US,
        "us/turn",
        paired_ratio=paired(theirs, ours),
        extra={
            "anchor": anchor,
            "mainspring_cpu_us": ours.best_cpu * US,
            f"{anchor}_cpu_us": theirs.best_cpu * US,
            "spread": max(ours.spread, theirs.spread),
            "note": "one run = 2 model turns + 1 tool call, instant models; per turn = run / 2",
        },
    )
    result.checks = [at_least(result.ratio, TARGET, f">= {TARGET:g}x less than {anchor}")]
    return result
