"""Graphs the CLI tests run as ``tests.cli_graphs:NAME`` (imported from the repo root).

``support`` branches on the intent an effect computes: a refund asks for
approval (a durable interrupt), anything else is answered at once.
"""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from mainspring import END, START, Context, Graph, append


class Ticket(TypedDict, total=False):
    text: str
    intent: str
    amount: int
    approved: bool
    replies: Annotated[list[str], append]


def detect_intent(text: str) -> str:
    return "refund" if "refund" in text.lower() else "other"


async def classify(s: Ticket, ctx: Context) -> dict[str, Any]:
    intent = await ctx.step("detect_intent", detect_intent, s.get("text", ""))
    ctx.emit({"intent": intent})
    return {"intent": intent}


async def refund(s: Ticket, ctx: Context) -> dict[str, Any]:
    decision = await ctx.interrupt({"approve_refund": s.get("amount", 0)})
    approved = bool(decision.get("approved")) if isinstance(decision, dict) else bool(decision)
    reply = "refund issued" if approved else "refund declined"
    return {"approved": approved, "replies": [reply]}


def answer(s: Ticket) -> dict[str, Any]:
    return {"replies": [f"re: {s.get('text', '')}"]}


def route(s: Ticket) -> str:
    return s.get("intent", "other")


g = Graph(Ticket, name="support")
g.node(classify)
g.node(refund)
g.node(answer)
g.edge(START, "classify")
g.branch("classify", route, {"refund": "refund", "other": "answer"})
g.edge("refund", END)
g.edge("answer", END)
support = g.compile()


class Count(TypedDict, total=False):
    n: int


def explode(s: Count) -> dict[str, Any]:
    raise ValueError(f"cannot handle n={s.get('n')}")


broken_graph = Graph(Count, name="broken")
broken_graph.node(explode)
broken_graph.edge(START, "explode")
broken_graph.edge("explode", END)
broken = broken_graph.compile()

not_a_graph = 42


async def classify_v2(s: Ticket, ctx: Context) -> dict[str, Any]:
    """A changed ``classify``: it calls another effect, so replays of ``support`` runs diverge."""
    intent = await ctx.step("detect_intent_v2", detect_intent, s.get("text", ""))
    return {"intent": intent}


g2 = Graph(Ticket, name="support")
g2.node("classify", classify_v2)
g2.node(refund)
g2.node(answer)
g2.edge(START, "classify")
g2.branch("classify", route, {"refund": "refund", "other": "answer"})
g2.edge("refund", END)
g2.edge("answer", END)
support_v2 = g2.compile()


class Naps(TypedDict, total=False):
    naps: int
    done: Annotated[list[int], append]


async def nap(s: Naps, ctx: Context) -> dict[str, Any]:
    """Sleeps ``naps`` times for 0.3 s, each nap a journaled effect: slow enough to watch live."""
    import anyio

    for i in range(s.get("naps", 3)):
        await ctx.step(f"nap{i}", anyio.sleep, 0.3)
    return {"done": [s.get("naps", 3)]}


slow_graph = Graph(Naps, name="slow")
slow_graph.node(nap)
slow_graph.edge(START, "nap")
slow_graph.edge("nap", END)
slow = slow_graph.compile()


class Gate(TypedDict, total=False):
    path: str
    opened: bool


async def wait_for_file(path: str) -> bool:
    import anyio

    while not await anyio.Path(path).exists():
        await anyio.sleep(0.02)
    return True


async def gatekeeper(s: Gate, ctx: Context) -> dict[str, Any]:
    """Waits (as a journaled effect) until the file at ``path`` exists: a test opens the gate."""
    return {"opened": await ctx.step("wait_for_gate", wait_for_file, s.get("path", ""))}


gate_graph = Graph(Gate, name="gate")
gate_graph.node(gatekeeper)
gate_graph.edge(START, "gatekeeper")
gate_graph.edge("gatekeeper", END)
gate = gate_graph.compile()


class Pair(TypedDict, total=False):
    answers: Annotated[list[str], append]


async def ask_left(s: Pair, ctx: Context) -> dict[str, Any]:
    return {"answers": [f"left={await ctx.interrupt({'side': 'left'})}"]}


async def ask_right(s: Pair, ctx: Context) -> dict[str, Any]:
    return {"answers": [f"right={await ctx.interrupt({'side': 'right'})}"]}


# Two branches of one step park at once: two pending interrupts, each resumable by id.
pair_graph = Graph(Pair, name="pair")
pair_graph.node(ask_left)
pair_graph.node(ask_right)
pair_graph.edge(START, "ask_left")
pair_graph.edge(START, "ask_right")
pair_graph.edge("ask_left", END)
pair_graph.edge("ask_right", END)
pair = pair_graph.compile()


# A graph that asks a model, and the gateway the CLI is told about with --models.
class Question(TypedDict, total=False):
    q: str
    a: str


async def ask_model(s: Question, ctx: Context) -> dict[str, Any]:
    response = await ctx.model("fast", s.get("q", ""))
    return {"a": response.text}


ask_graph = Graph(Question, name="ask")
ask_graph.node(ask_model)
ask_graph.edge(START, "ask_model")
ask_graph.edge("ask_model", END)
ask = ask_graph.compile()


def gateway() -> Any:
    from mainspring.models import Gateway, ScriptedModel

    return Gateway({"fast": ScriptedModel(["forty-two"])})


async def look_up(s: Question, ctx: Context) -> dict[str, Any]:
    return {"a": await ctx.tool("shout", text=s.get("q", ""))}


lookup_graph = Graph(Question, name="lookup")
lookup_graph.node(look_up)
lookup_graph.edge(START, "look_up")
lookup_graph.edge("look_up", END)
lookup = lookup_graph.compile()


def toolbox() -> Any:
    from mainspring.tools import Toolbox

    def shout(text: str) -> str:
        """Say it louder."""
        return text.upper()

    return Toolbox([shout])
