"""End to end: a document ingested into SemanticMemory, a thread in session memory, and
the context a ContextBuilder assembles from both (with a summary through the gateway)."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from mainspring.memory.context import ContextBuilder, GatewaySummarizer
from mainspring.memory.knowledge import cite, ingest
from mainspring.memory.scope import Scope
from mainspring.models import Gateway
from mainspring.models.providers.scripted import ScriptedModel
from mainspring.models.tokens import count_message_tokens
from tests.pdf_maker import make_pdf

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        importlib.util.find_spec("mainspring.memory.semantic.memory") is None
        or importlib.util.find_spec("mainspring.memory.session.local") is None,
        reason="SemanticMemory and LocalSessionMemory (their branches) are not in this checkout",
    ),
]


def tiers() -> tuple[Any, Any]:
    semantic = importlib.import_module("mainspring.memory.semantic.memory")
    session = importlib.import_module("mainspring.memory.session.local")
    return semantic.SemanticMemory, session.LocalSessionMemory


async def test_a_document_and_a_thread_become_one_context(tmp_path: Path) -> None:
    semantic_memory, session_memory = tiers()
    scope = Scope("acme", user="ana")
    pdf = make_pdf(
        [["Refunds are paid within 14 days of the return.", "Keep the receipt."],
         ["Exchanges are free in any store within 30 days."]],
        title="Returns policy", outline=[("Refunds", 0), ("Exchanges", 1)],
    )  # fmt: skip
    session = session_memory()
    async with semantic_memory.open(f"sqlite:///{tmp_path / 'm.db'}") as memory:
        report = await ingest(memory, pdf, document="returns.pdf", scope=scope)
        assert report.kind == "pdf" and report.chunks == 2
        again = await ingest(memory, pdf, document="returns.pdf", scope=scope)
        assert again.ids == report.ids and again.removed == 0
        assert len(await memory.list(scope)) == 2, "re-ingesting did not pile up"

        for n in range(30):
            await session.append(
                "t1",
                {"role": "user", "content": f"Question {n} about my order " + "and details " * 40},
                {"role": "assistant", "content": f"Answer {n} " + "with more details " * 40},
                tenant="acme",
            )
        model = ScriptedModel(["Ana asked about her order thirty times."])
        async with Gateway({"small": model}) as gateway:
            builder = ContextBuilder(
                session=session, semantic=memory, system="You help with orders.",
                summarizer=GatewaySummarizer(gateway, "small"), items=2,
            )  # fmt: skip
            ctx = await builder.build(
                "How many days do I have to get a refund?", thread="t1", scope=scope, budget=1200
            )
    assert ctx.tokens == count_message_tokens(ctx.messages) <= 1200
    system_text = ctx.messages[0].text
    assert "Refunds are paid within 14 days" in system_text
    assert 'Returns policy, "Refunds", p. 1 (returns.pdf#0)' in system_text
    assert "Ana asked about her order thirty times." in system_text
    assert ctx.left_out_by("summarized") and ctx.messages[-1].text.startswith("How many days")
    hits = await _search_again(tmp_path, scope)
    assert cite(hits[0]).startswith("Returns policy")


async def _search_again(tmp_path: Path, scope: Scope) -> Any:
    """The chunks are durable: a new process (a new memory on the same file) finds them."""
    semantic_memory, _ = tiers()
    async with semantic_memory.open(f"sqlite:///{tmp_path / 'm.db'}") as memory:
        return await memory.search("refund deadline", scope=scope, limit=1)
