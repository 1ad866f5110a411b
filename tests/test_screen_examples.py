"""The screen never flags the project's own example traffic: examples/support_agent.py and
examples/ops_agent.py run in process, as their scripts run them offline (scripted models,
the same tools, the warehouse MCP server, the sandbox), with a strict Screen at the gate
(every source screened, a flag stops the run)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from mainspring import RunStatus, Runtime
from mainspring.agents import Agent
from mainspring.guard.screen import Rule, Screen
from mainspring.tools import sandbox_tools

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Imported by name: mypy checks this project's tests, not the examples' own typing.
support_agent: Any = importlib.import_module("examples.support_agent")
ops_agent: Any = importlib.import_module("examples.ops_agent")


def _strict() -> Screen:
    return Screen({"*": Rule(on_flag="stop")})


async def test_support_agent_traffic_is_never_flagged(tmp_path: Path) -> None:
    screen = _strict()
    inbox = REPO / "examples" / "data" / "tickets.json"
    url = f"sqlite:///{tmp_path / 'desk.db'}"
    models = support_agent.model_gateway()
    async with Runtime.open(url, graphs=[support_agent.app], models=models, gates=[screen]) as rt:
        handle = await rt.start(
            support_agent.app, {"inbox": str(inbox), "outbox": str(tmp_path / "out.jsonl")}
        )
        outcome = await handle.wait()
        assert outcome.status is RunStatus.INTERRUPTED  # the big refunds wait for a person
        await rt.resume(handle.run_id, values={p.id: True for p in outcome.interrupts})
        final = await rt.handle(handle.run_id).result()
    await models.aclose()
    assert final["summary"]["refunded"] == 3
    tickets = json.loads(inbox.read_text())
    assert screen.stats.screened >= len(tickets)  # every ticket's text was screened
    assert screen.stats.flagged == 0 and list(screen.quarantined) == []


async def test_ops_agent_traffic_is_never_flagged(tmp_path: Path) -> None:
    screen = _strict()
    async with ops_agent.warehouse() as server:
        agent = Agent(
            "ops",
            "ops",
            ops_agent.INSTRUCTIONS,
            tools=[ops_agent.lookup_order, ops_agent.refund, *server.tools(), *sandbox_tools()],
        )
        url = f"sqlite:///{tmp_path / 'ops.db'}"
        models = ops_agent.model_gateway()
        async with Runtime.open(
            url, models=models, tools=agent.toolbox, gates=[screen], recover="off"
        ) as rt:
            parked = await agent.run(rt, ops_agent.COMPLAINT, run_id="ops-1")
            assert parked.status is RunStatus.INTERRUPTED  # the refund's approval
            result = await agent.resume(rt, "ops-1", True)
    assert result.status is RunStatus.FINISHED and "refunded" in result.text
    # The complaint, the order, the stock, the sandbox's answer and the refund were screened.
    assert screen.stats.screened >= 5
    assert screen.stats.flagged == 0 and list(screen.quarantined) == []
