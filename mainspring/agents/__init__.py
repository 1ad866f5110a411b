"""Agents: a ready agent loop (a model, its tools, handoffs, structured output) compiled to
an ordinary Mainspring graph, so an agent is durable, streamed, traced and replayable.

    agent = Agent("support", "fast", "Answer order questions.", tools=[lookup_order])
    async with Runtime.open("sqlite:///a.db", models=gateway, tools=agent.toolbox) as rt:
        result = await agent.run(rt, "Where is order A-17?", thread="customer-42")
        print(result.text, result.run_id)

Not imported by ``import mainspring``: it loads the tools layer and pydantic.
"""

from .agent import Agent
from .errors import AgentError, MaxTurnsExceeded
from .memory import AgentMemory
from .running import AgentResult
from .state import AgentState
from .topology import AgentTool

__all__ = [
    "Agent",
    "AgentError",
    "AgentMemory",
    "AgentResult",
    "AgentState",
    "AgentTool",
    "MaxTurnsExceeded",
]
