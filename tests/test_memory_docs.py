"""The examples of docs/memory-context.md and docs/knowledge.md run, and print what the
pages say they print."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def run_example(page: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = (DOCS / page).read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S)
    shown = re.search(r"\nprints\n\n```\n(.*?)```", text, re.S)
    assert code is not None and shown is not None, f"docs/{page} has an example and its output"
    exec(compile(code.group(1), f"docs/{page}", "exec"), {"__name__": "__main__"})
    assert capsys.readouterr().out == shown.group(1)


def test_the_context_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    run_example("memory-context.md", capsys)


@pytest.mark.skipif(
    importlib.util.find_spec("mainspring.memory.semantic.memory") is None,
    reason="SemanticMemory (the semantic memory branch) is not in this checkout",
)
def test_the_knowledge_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    run_example("knowledge.md", capsys)
