"""The benchmark graphs, each built twice: once for Mainspring, once for LangGraph.

The two builds of a graph have the same nodes, edges and state reducers, so a
workload compares the runtimes and nothing else.
"""

from __future__ import annotations

import asyncio
import operator
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END as LG_END
from langgraph.graph import START as LG_START
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph

from mainspring import END, START, CompiledGraph, Graph, append

LINEAR_STEPS = 10
SLEEPY_STEPS = 5
SLEEP_S = 0.01
CHAT_TURNS = 200
MESSAGE = "m" * 1024  # one 1 KB message per chat turn

AnyGraph = CompiledStateGraph[Any, Any, Any, Any]


class Linear(TypedDict, total=False):
    k: str


class Chat(TypedDict, total=False):
    messages: Annotated[list[str], append]


class LgChat(TypedDict, total=False):
    messages: Annotated[list[str], operator.add]


def lg_config(recursion_limit: int | None = None) -> RunnableConfig:
    """A LangGraph config for a fresh run: a new thread, as Mainspring starts a new run."""
    config = RunnableConfig(configurable={"thread_id": uuid.uuid4().hex})
    if recursion_limit is not None:
        config["recursion_limit"] = recursion_limit
    return config


def _trivial(state: Any) -> dict[str, str]:
    return {"k": "v"}


async def _sleepy(state: Any) -> dict[str, str]:
    # The node's own await is user code: both sides use the same asyncio.sleep.
    await asyncio.sleep(SLEEP_S)
    return {"k": "v"}


async def _lg_sleepy(state: Any) -> dict[str, str]:
    await asyncio.sleep(SLEEP_S)
    return {"k": "v"}


def _chat(state: Any) -> dict[str, list[str]]:
    return {"messages": [MESSAGE]}


def _chat_route(state: Any) -> str:
    return "done" if len(state["messages"]) >= CHAT_TURNS else "more"


# --- chains of nodes --------------------------------------------------------------


def _ms_chain(name: str, fn: Callable[[Any], Any], steps: int) -> CompiledGraph:
    g = Graph(Linear)
    previous = START
    for i in range(steps):
        g.node(f"n{i}", fn)
        g.edge(previous, f"n{i}")
        previous = f"n{i}"
    g.edge(previous, END)
    return g.compile(name=name)


def _lg_chain(
    fn: Callable[..., Any], steps: int, checkpointer: BaseCheckpointSaver[Any] | None
) -> AnyGraph:
    g = StateGraph(Linear)
    previous = LG_START
    for i in range(steps):
        g.add_node(f"n{i}", fn)
        g.add_edge(previous, f"n{i}")
        previous = f"n{i}"
    g.add_edge(previous, LG_END)
    return g.compile(checkpointer=checkpointer)


def ms_linear() -> CompiledGraph:
    """W1-W3: ten trivial sync nodes in a line."""
    return _ms_chain("linear", _trivial, LINEAR_STEPS)


def lg_linear(checkpointer: BaseCheckpointSaver[Any] | None = None) -> AnyGraph:
    return _lg_chain(_trivial, LINEAR_STEPS, checkpointer)


def ms_sleepy() -> CompiledGraph:
    """W4: five async nodes, each awaiting 10 ms."""
    return _ms_chain("sleepy", _sleepy, SLEEPY_STEPS)


def lg_sleepy(checkpointer: BaseCheckpointSaver[Any] | None = None) -> AnyGraph:
    return _lg_chain(_lg_sleepy, SLEEPY_STEPS, checkpointer)


def ms_parked(park: Callable[[Any], Awaitable[Any]]) -> CompiledGraph:
    """W6: one async node that waits until released."""
    return _ms_chain("parked", park, 1)


def lg_parked(park: Callable[..., Awaitable[Any]]) -> AnyGraph:
    return _lg_chain(park, 1, None)


# --- a chat loop ------------------------------------------------------------------


def ms_chat() -> CompiledGraph:
    """W5: node ``chat`` appends a 1 KB message and loops until there are 200."""
    g = Graph(Chat)
    g.node("chat", _chat)
    g.edge(START, "chat")
    g.branch("chat", _chat_route, {"more": "chat", "done": END})
    return g.compile(name="chat")


def lg_chat(checkpointer: BaseCheckpointSaver[Any] | None = None) -> AnyGraph:
    g = StateGraph(LgChat)
    g.add_node("chat", _chat)
    g.add_edge(LG_START, "chat")
    g.add_conditional_edges("chat", _chat_route, {"more": "chat", "done": LG_END})
    return g.compile(checkpointer=checkpointer)
