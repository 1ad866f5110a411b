"""A concierge agent with memory: it reads a handbook, remembers its users, and forgets
nothing it should not.

    python examples/memory_agent.py            (pip install -e '.[memory,models]')

1. The handbook (``examples/data/handbook.md``) is ingested into semantic memory as
   chunks that keep their section headings, for citations.
2. Ana tells the agent where she lives, in one conversation; the agent remembers it
   (``Agent(memory=AgentMemory(...))``: remember after a turn).
3. In a new conversation she asks a question: the agent recalls what it knows of her
   before the turn, searches the handbook with a tool, and answers with a citation.
   Bob asks the same and gets no trace of Ana's memory.
4. A long thread is assembled into a small token budget: what was summarised or left
   out, and why.

Every memory read and write is a journaled effect that passes the effect gate; the
model is an offline scripted one (swap the Gateway's spec for a real provider).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

from mainspring import Memory, Runtime
from mainspring.agents import Agent, AgentMemory
from mainspring.events import EffectStarted
from mainspring.memory import LocalSessionMemory, Scope, ingest
from mainspring.memory.knowledge import cite
from mainspring.models import Gateway, ModelRequest, ScriptedModel, ToolCall
from mainspring.tools import tool

HANDBOOK = Path(__file__).resolve().parent / "data" / "handbook.md"


def scripted_turn(request: ModelRequest) -> Any:
    """The offline model: asks the handbook, then answers from what it was shown."""
    last = request.messages[-1]
    if last.role == "user" and "?" not in last.text:
        return "Noted, thank you."
    if last.role == "user":
        return [ToolCall("h1", "handbook", {"question": last.text})]
    notes = " ".join(m.text for m in request.messages if m.role == "system")
    city = re.search(r"live in (\w+)", notes)
    where = (
        f"You live in {city.group(1)}, so your order ships from Porto in 1-2 working days."
        if city and "Lisbon" in city.group(1)
        else "Tell me where you live and I can say how fast we ship to you."
    )
    passages = json.loads(last.text)  # the handbook tool's result
    return (
        "Shoes can be returned within 30 days of delivery, unworn. "
        f"{where} (Source: {passages[0]['cite'] if passages else 'the handbook'})"
    )


def handbook_tool(memory: Memory) -> Any:
    @tool
    async def handbook(question: str) -> list[dict[str, str]]:
        """Search the customer handbook; passages with their citations."""
        semantic = memory.require_semantic()
        hits = await semantic.search(
            question, scope=Scope(), filters={"document": "handbook.md"}, limit=2
        )
        return [{"text": h.item.text, "cite": cite(h)} for h in hits]

    return handbook


async def main(directory: Path) -> None:
    memory = Memory(session=LocalSessionMemory(), semantic=f"sqlite:///{directory}/memory.db")
    agent = Agent(
        "concierge",
        "fast",
        "Answer customers from the handbook; cite it.",
        tools=[handbook_tool(memory)],
        memory=AgentMemory(recall=3, remember="input"),
    )
    gateway = Gateway({"fast": ScriptedModel(scripted_turn, name="offline-concierge")})
    store = f"sqlite:///{directory}/runs.db"
    async with Runtime.open(store, models=gateway, tools=agent.toolbox, memory=memory) as rt:
        semantic = memory.require_semantic()
        report = await ingest(semantic, HANDBOOK, document="handbook.md")
        print(f"ingested {report.document}: {len(report.ids)} chunks")

        ana, bob = {"user": "ana"}, {"user": "bob"}
        said = await agent.run(rt, "I live in Lisbon and wear size 41.", thread="a1", metadata=ana)
        print(f"ana (conversation 1): {said.text}")
        await semantic.settle()

        question = "Can I return shoes I got 3 weeks ago, and how fast do you ship to me?"
        answer = await agent.run(rt, question, thread="a2", metadata=ana)
        print(f"ana (conversation 2): {answer.text}")
        other = await agent.run(rt, question, thread="b1", metadata=bob)
        print(f"bob: {other.text}")
        events = await rt.events(answer.run_id)
        effects = [e.data.name for e in events if isinstance(e.data, EffectStarted)]
        print("journaled effects of ana's answer: " + ", ".join(effects))

        session = memory.require_session()
        for i in range(60):
            text = f"message {i}: " + "details " * 30
            await session.append("a1", {"role": "user", "content": text})
        assembled = await memory.assemble(
            "What size does Ana wear?", budget=400, thread="a1", scope=Scope(user="ana")
        )
        kept = Counter(piece.source for piece in assembled.included)
        left = Counter(piece.reason for piece in assembled.left_out)
        print(
            f"context: {assembled.tokens} of {assembled.budget} tokens; in: {dict(kept)}; "
            f"left out: {dict(left)}"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        anyio.run(main, Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            anyio.run(main, Path(tmp))
