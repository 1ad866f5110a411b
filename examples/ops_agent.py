"""An operations agent on Mainspring's embedded default (one SQLite file, no services).

A customer's complaint goes to an agent (``mainspring.agents.Agent``: a model node and
a tools node in a loop, an ordinary durable graph) that uses several tools: it looks
up the order and asks the warehouse (a tool of an MCP server this script starts over
stdio) in parallel, computes the customer's average order in the sandboxed ``python``
tool (bubblewrap: no network, a private filesystem), and issues a refund, which needs
a person's approval above 100 EUR. The run parks there. This script runs the agent in
a child process, kills it (SIGKILL) while it waits, and resumes the run from the
journal in a new runtime: no model or tool call is made twice.

Governance sits at the effect gate every call passes: a policy (refunds above 500 EUR
are denied, whatever the model asks; each decision's policy version is journaled), a
screen for prompt injection on what the tools return and the customer writes, and the
audit chain every journal carries, verified at the end.

    python examples/ops_agent.py                 # approve the refund
    python examples/ops_agent.py --approve no    # reject it: the model is told why

The model: offline, a scripted model that plays the agent's turns (deterministic);
with OPENAI_API_KEY (MAINSPRING_OPENAI_MODEL, default gpt-4o-mini), ANTHROPIC_API_KEY
or MAINSPRING_OPENAI_BASE_URL (any OpenAI-compatible server) set, a real one. Without
bubblewrap the sandboxed tool refuses (the model is told, and goes on); it never runs
code unsandboxed. The store (--db, default ops_agent.db) keeps every run's journal:
`mainspring show RUN --store sqlite:///ops_agent.db`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio

from mainspring import EventKind, RunStatus, Runtime
from mainspring.agents import Agent
from mainspring.guard.audit import verify
from mainspring.guard.policy import Policy, Request, Rules, deny
from mainspring.guard.screen import Screen
from mainspring.models import Gateway, ModelRequest, ModelSpec, ScriptedModel, ToolCall
from mainspring.tools import MCPServer, ToolContext, sandbox_tools, tool

HERE = Path(__file__).resolve().parent
RUN_ID = "ops-complaint-1"
COMPLAINT = (
    "Customer ada@example.com: order A-1001 (a kettle, KETTLE-2) arrived broken. She wants "
    "a refund of 180 EUR, or a replacement if we have one in stock."
)
ORDERS_CSV = "order,amount\nA-0871,64.50\nA-0933,120.00\nA-1001,180.00\n"

# -- the agent's own tools -------------------------------------------------------------


@tool
def lookup_order(order_id: str) -> dict[str, Any]:
    """Find an order: its customer, product and amount.

    Args:
        order_id: The order's id, like A-1001.
    """
    return {"id": order_id, "customer": "ada@example.com", "sku": "KETTLE-2", "amount": 180.0}


@tool(needs_approval=lambda args: args["amount"] > 100)
def refund(order_id: str, amount: float, ctx: ToolContext) -> dict[str, Any]:
    """Refund an order (a person approves refunds above 100 EUR).

    Args:
        order_id: The order to refund.
        amount: The amount in EUR.
    """
    # The payment provider de-duplicates by the call's idempotency key: the same on
    # every retry and re-run of this call, so a refund is never paid twice.
    return {"refunded": amount, "order": order_id, "reference": f"RF-{order_id}"}


INSTRUCTIONS = (
    "You resolve customer complaints. Look the order up and check the warehouse stock "
    "(warehouse_stock) in parallel; compute the customer's average order value from the "
    "CSV with the python tool; then refund (or say a replacement ships) and answer in "
    "two sentences."
)


def scripted_turn(request: ModelRequest) -> Any:
    """The offline model: plays the agent's turns from what the conversation holds."""
    results = [m for m in request.messages if m.role == "tool"]
    done = {m.name for m in results}
    if not results:
        return [
            ToolCall("c1", "lookup_order", {"order_id": "A-1001"}),
            ToolCall("c2", "warehouse_stock", {"sku": "KETTLE-2"}),
        ]
    if "python" not in done:
        code = (
            "import csv\nrows = list(csv.DictReader(open('orders.csv')))\n"
            "print(round(sum(float(r['amount']) for r in rows) / len(rows), 2))"
        )
        return [ToolCall("c3", "python", {"code": code, "files": {"orders.csv": ORDERS_CSV}})]
    if "refund" not in done:
        return [ToolCall("c4", "refund", {"order_id": "A-1001", "amount": 180.0})]
    average = _sandbox_output(next(m.text for m in results if m.name == "python"))
    answer = results[-1].text
    if "not made" in answer or answer.startswith("error"):
        return (
            f"We could not refund order A-1001 now; a colleague will contact Ada today. {average}"
        )
    return f"Order A-1001 is refunded (180 EUR, RF-A-1001). {average}"


def _sandbox_output(result: str) -> str:
    """What the sandboxed computation printed, as the model would read it."""
    try:
        stdout = json.loads(result)["stdout"].strip()
    except (ValueError, KeyError, TypeError):  # the sandbox refused (no bubblewrap here)
        return "(The average order could not be computed: the sandbox is not available.)"
    return f"Ada's average order is {float(stdout):.2f} EUR."


def model_gateway() -> Gateway:
    """The real model the environment names, else the offline scripted one."""
    if os.environ.get("OPENAI_API_KEY") or os.environ.get("MAINSPRING_OPENAI_BASE_URL"):
        from mainspring.models import OpenAIChat

        provider: Any = OpenAIChat(base_url=os.environ.get("MAINSPRING_OPENAI_BASE_URL"))
        model = os.environ.get("MAINSPRING_OPENAI_MODEL", "gpt-4o-mini")
    elif os.environ.get("ANTHROPIC_API_KEY"):
        from mainspring.models import Anthropic

        provider = Anthropic()
        model = os.environ.get("MAINSPRING_ANTHROPIC_MODEL", "claude-haiku-4-5")
    else:
        provider, model = ScriptedModel(scripted_turn, name="offline-ops"), "ops-script-1"
    return Gateway({"ops": ModelSpec(provider, model, timeout=60, retries=2)})


def warehouse() -> MCPServer:
    """The warehouse's MCP server, started over stdio."""
    argv = ["-m", "mainspring.tools.mcp_server", "examples.warehouse_mcp:toolbox"]
    return MCPServer.stdio(sys.executable, argv, cwd=str(HERE.parent), call_timeout=20)


# -- governance: policy as code, screening ---------------------------------------------

RULES = Rules()


@RULES.rule("refund-cap", tools=["refund"])
def refund_cap(request: Request) -> Any:
    if request.args["amount"] > 500:
        return deny("refunds above 500 EUR go through finance, not the agent")
    return None


def governance() -> list[object]:
    """The gate's hooks before the tools' own: the policy first, then the screen."""
    return [Policy(rules=[RULES], name="ops"), Screen()]


async def open_agent(db: Path, server: MCPServer) -> tuple[Agent, Runtime]:
    agent = Agent(
        "ops",
        "ops",
        INSTRUCTIONS,
        tools=[lookup_order, refund, *server.tools(), *sandbox_tools()],
    )
    runtime = Runtime.open(
        f"sqlite:///{db}",
        models=model_gateway(),
        tools=agent.toolbox,
        gates=governance(),
        recover="off",
    )
    return agent, runtime


# -- the two processes --------------------------------------------------------------


async def child(db: Path) -> None:
    """Run the agent until it parks on the refund's approval, then wait to be killed."""
    async with warehouse() as server:
        agent, runtime = await open_agent(db, server)
        async with runtime as rt:
            result = await agent.run(rt, COMPLAINT, run_id=RUN_ID)
            print(f"PARKED {result.status.value}", flush=True)
            await anyio.sleep(3600)  # the parent kills this process here


async def main(db: Path, approve: bool) -> int:
    if db.exists():
        db.unlink()  # each run of the example starts from a fresh store
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", "--db", str(db)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=HERE.parent,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "PARKED interrupted":
        proc.kill()
        print(f"error: the agent's process said {line!r}", file=sys.stderr)
        return 1
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    print(f"run {RUN_ID}: parked on an approval; its process was killed (SIGKILL)")
    async with warehouse() as server:
        agent, runtime = await open_agent(db, server)
        async with runtime as rt:
            asked = (await rt.outcome(RUN_ID, agent.graph)).interrupts[0].payload
            print(f"  a person is asked: {json.dumps(asked['data'])}")
            answer: Any = True if approve else {"approve": False, "reason": "over budget"}
            result = await agent.resume(rt, RUN_ID, answer)
            events = await rt.events(RUN_ID)
            audit = await verify(rt)
    _report(result.text, result.status, events)
    verdict = "intact" if audit.ok else f"TAMPERED: {audit.findings}"
    print(
        f"audit: {audit.events} hash-chained events, {audit.anchors} anchors: {verdict} "
        f"(mainspring audit verify --store sqlite:///{ARGS.db})"
    )
    return 0 if audit.ok else 1


def _report(text: str, status: RunStatus, events: list[Any]) -> None:
    calls = [e.data for e in events if e.kind is EventKind.EFFECT_STARTED]
    keys = [c.key for c in calls]
    print(f"resumed in a new process: the run {status.value}")
    print(f"answer: {text}")
    names = [c.name for c in calls]
    print(
        f"journal: {len(events)} events; {len(calls)} calls "
        f"({', '.join(dict.fromkeys(names))}), {len(keys) - len(set(keys))} repeated"
    )
    # The policy's grounds, by hook name: on the call itself, or on the decision record of
    # the tools' approval that came after the policy allowed it.
    grounds = [(c.name, (c.basis or {}).get("ops")) for c in calls]
    grounds += [
        (e.data.name, e.data.basis["allowed"].get("ops"))
        for e in events
        if e.kind is EventKind.EFFECT_DECIDED and "allowed" in (e.data.basis or {})
    ]
    decided = {name: basis["version"] for name, basis in grounds if basis}
    print(
        f"policy 'ops' (version {', '.join(sorted(set(decided.values())))}) decided "
        f"{len(decided)} of {len(set(names))} kinds of call"
    )
    print(f"explore: mainspring show {RUN_ID} --store sqlite:///{ARGS.db}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", type=Path, default=Path("ops_agent.db"))
    parser.add_argument("--approve", choices=["yes", "no"], default="yes")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ARGS = parser.parse_args()
    sys.path.insert(0, str(HERE.parent))
    if ARGS.child:
        anyio.run(child, ARGS.db.resolve())
        sys.exit(0)
    sys.exit(anyio.run(main, ARGS.db.resolve(), ARGS.approve == "yes"))
