"""How agents reach each other: agents offered as tools, handoffs, and the set of agents
one run may speak as. No import of ``agent.py``: the graph builder and the runner use
these without depending on the Agent class (a protocol describes what they read)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .errors import AgentError


class AgentLike(Protocol):
    """What the graph builder and the runner read of an agent (``Agent`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def instructions(self) -> str: ...
    @property
    def output_type(self) -> Any: ...
    @property
    def max_turns(self) -> int: ...
    @property
    def model_options(self) -> dict[str, Any]: ...
    @property
    def ref(self) -> str | None: ...
    @property
    def memory(self) -> Any: ...  # an AgentMemory, or None
    @property
    def handoffs(self) -> Sequence[Any]: ...
    @property
    def tools(self) -> Sequence[Any]: ...
    @property
    def prepared(self) -> Any: ...  # the runtimes that know its graph (a WeakSet)

    @property
    def graph(self) -> Any: ...

    def all_tools(self) -> list[Any]: ...


class AgentTool:
    """An agent offered to another agent's model as a tool (``agent.as_tool()``): a call
    runs the agent as a child run (a subgraph with its own journal, its own turn limit and,
    through per-run budgets, its own budget); its final output is the tool's result."""

    def __init__(
        self,
        agent: AgentLike,
        *,
        name: str | None = None,
        description: str | None = None,
        max_turns: int | None = None,
    ) -> None:
        self.agent = agent
        self.name = name or agent.name
        self.description = description or agent.description or f"Ask agent {agent.name!r}."
        if max_turns is not None and max_turns < 1:
            raise AgentError(f"{agent.name}.as_tool(max_turns={max_turns}): give at least 1")
        self.max_turns = max_turns
        self.parameters: dict[str, Any] = {
            "type": "object",
            "properties": {
                "input": {"type": "string", "description": "What to ask the agent, in full."}
            },
            "required": ["input"],
            "additionalProperties": False,
        }

    def __repr__(self) -> str:
        return f"<AgentTool {self.name} -> {self.agent.name}>"


def reachable(root: AgentLike, *, through_tools: bool = False) -> list[AgentLike]:
    """``root`` and the agents it hands off to, transitively (and, ``through_tools``, the
    agents it uses as tools), in the order found."""
    seen: dict[int, AgentLike] = {}
    todo = [root]
    while todo:
        agent = todo.pop(0)
        if id(agent) in seen:
            continue
        seen[id(agent)] = agent
        todo.extend(agent.handoffs)
        if through_tools:
            todo.extend(t.agent for t in agent.tools if isinstance(t, AgentTool))
    return list(seen.values())


def handoff_agents(root: AgentLike) -> dict[str, AgentLike]:
    """The agents one run of ``root`` may speak as, by name (names must differ)."""
    agents: dict[str, AgentLike] = {}
    for agent in reachable(root):
        known = agents.setdefault(agent.name, agent)
        if known is not agent:
            raise AgentError(
                f"two agents reachable from {root.name!r} by handoffs are named "
                f"{agent.name!r}; give them different names"
            )
    return agents


def names(items: Sequence[str]) -> str:
    return ", ".join(items) or "none"
