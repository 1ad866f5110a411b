"""An agent run in a process of its own, to be killed mid-run (tests/test_agents.py).

    python -m tests.agent_worker --db PATH --log PATH --scenario parked|slow

Every model call and every tool execution appends a line to ``--log`` (its own file,
flushed at once), so the test counts what ran in which process:
``model <turn>``, ``tool <name> <idempotency key>``. The model is a deterministic
function of the conversation (a ScriptedModel with a function script), so the process
that resumes the run answers exactly as the killed one would have.

``parked``: turn 1 looks the order up, turn 2 asks for a refund that needs approval
(the run parks; the worker prints ``PARKED`` and waits to be killed); after approval,
turn 3 answers. ``slow``: turn 1 calls ``lookup`` and ``slow_report`` in parallel;
``slow_report`` hangs in the worker (``AGENT_WORKER_SLOW=1``) and the worker is killed
while it runs; turn 2 answers.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import anyio

from mainspring import Runtime
from mainspring.agents import Agent
from mainspring.models import Gateway, ModelRequest, ScriptedModel, ToolCall
from mainspring.tools import ToolContext, tool

RUN_ID = "agent-run-1"


def log(line: str) -> None:
    path = os.environ.get("AGENT_WORKER_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


@tool
def lookup(order: str, ctx: ToolContext) -> dict[str, Any]:
    """Look an order up.

    Args:
        order: the order's id
    """
    log(f"tool lookup {ctx.idempotency_key}")
    return {"order": order, "amount": 250}


@tool(needs_approval=True)
def refund(order: str, amount: int, ctx: ToolContext) -> str:
    """Refund an order (a person approves it first)."""
    log(f"tool refund {ctx.idempotency_key} {amount}")
    return f"refunded {amount} on {order}"


@tool(timeout=60)
async def slow_report(ctx: ToolContext) -> str:
    """A long report."""
    log(f"tool slow_report {ctx.idempotency_key}")
    if os.environ.get("AGENT_WORKER_SLOW") == "1":
        await anyio.sleep(60)  # killed meanwhile
    return "report ready"


def _tool_results(request: ModelRequest) -> int:
    return sum(1 for m in request.messages if m.role == "tool")


def _turn(request: ModelRequest) -> int:
    return 1 + sum(1 for m in request.messages if m.role == "assistant")


def parked_script(request: ModelRequest) -> Any:
    done = _tool_results(request)
    log(f"model {_turn(request)}")
    if done == 0:
        return [ToolCall("c1", "lookup", {"order": "A-17"})]
    if done == 1:
        return [ToolCall("c2", "refund", {"order": "A-17", "amount": 250})]
    return "refunded: " + request.messages[-1].text


def slow_script(request: ModelRequest) -> Any:
    done = _tool_results(request)
    log(f"model {_turn(request)}")
    if done == 0:
        return [ToolCall("c1", "lookup", {"order": "A-17"}), ToolCall("c2", "slow_report", {})]
    return "done: " + " | ".join(m.text for m in request.messages if m.role == "tool")


parked_agent = Agent("ops", "fast", "You handle orders.", tools=[lookup, refund])
slow_agent = Agent("reports", "fast", "You write reports.", tools=[lookup, slow_report])


def gateway(scenario: str) -> Gateway:
    script = parked_script if scenario == "parked" else slow_script
    return Gateway({"fast": ScriptedModel(script)})


def agent_for(scenario: str) -> Agent:
    return parked_agent if scenario == "parked" else slow_agent


async def main(db: str, scenario: str) -> None:
    agent = agent_for(scenario)
    url = f"sqlite:///{db}"
    async with Runtime.open(url, models=gateway(scenario), tools=agent.toolbox) as rt:
        handle = await agent.start(rt, "refund order A-17", run_id=RUN_ID)
        if scenario == "parked":
            outcome = await handle.wait()
            print(f"PARKED {outcome.status.value}", flush=True)
        else:
            print("STARTED", flush=True)
        while True:  # until killed
            await anyio.sleep(0.05)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--scenario", choices=["parked", "slow"], required=True)
    args = parser.parse_args()
    if not os.environ.get("AGENT_WORKER_LOG"):
        sys.exit("set AGENT_WORKER_LOG")
    anyio.run(main, args.db, args.scenario)
