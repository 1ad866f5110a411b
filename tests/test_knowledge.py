"""Knowledge ingestion: parsers, structure-respecting chunks, sources, re-ingestion."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mainspring.memory.context.counting import TokenCounter
from mainspring.memory.knowledge import cite, ingest
from mainspring.memory.knowledge.chunking import chunk
from mainspring.memory.knowledge.html import parse_html
from mainspring.memory.knowledge.markdown import parse_markdown
from mainspring.memory.knowledge.plain import parse_text
from mainspring.memory.scope import Scope
from mainspring.memory.semantic.items import Hit, MemoryItem, Source, WriteResult
from tests.pdf_maker import make_pdf

pytestmark = pytest.mark.anyio
count = TokenCounter().text


class ListMemory:
    """The part of semantic memory ingestion uses, kept in a dict, with its write rules
    (an exact repeat of a live item's text in the scope is a duplicate; an id given
    again replaces). The end-to-end test against SemanticMemory is in
    tests/test_memory_e2e.py."""

    def __init__(self) -> None:
        self.items: dict[str, MemoryItem] = {}
        self.writes = 0

    async def add(
        self, text: str, *, scope: Scope, metadata: Mapping[str, Any] | None = None,
        source: Source | None = None, id: str | None = None,
    ) -> WriteResult:  # fmt: skip
        for old in self.items.values():
            if old.scope == scope and old.text == text:
                return WriteResult(old.id, "duplicate", duplicate_of=old.id)
        assert id is not None
        self.writes += 1
        self.items[id] = MemoryItem(id, text, scope, dict(metadata or {}), source=source)
        return WriteResult(id, "pending")

    async def list(
        self, scope: Scope, *, filters: Mapping[str, Any] | None = None,
        include_superseded: bool = False, limit: int = 100, after: str | None = None,
    ) -> list[MemoryItem]:  # fmt: skip
        found = sorted(
            (i for i in self.items.values()
             if scope.matches(i.scope) and all(i.metadata.get(k) == v for k, v in (filters or {}).items())
             and (after is None or i.id > after)),
            key=lambda i: i.id,
        )  # fmt: skip
        return found[:limit]

    async def forget(self, ids: str | Sequence[str], *, tenant: str = "") -> int:
        ids = [ids] if isinstance(ids, str) else ids
        return sum(self.items.pop(i, None) is not None for i in ids)


GUIDE = """# Widget Guide

Widgets turn gears. This guide covers installing and running them.

## Install

### Linux

Run the installer from a terminal:

```sh
curl -O https://example.invalid/widget.tar.gz
tar xf widget.tar.gz && ./widget/install.sh --prefix /opt/widget
```

| option   | meaning              |
|----------|----------------------|
| --prefix | where it goes        |
| --quiet  | print nothing        |

### Windows

Double-click the MSI. Accept the licence. Restart when asked.

## Running

""" + " ".join(
    f"Sentence {n} explains how widget number {n} spins at {n * 10} revolutions a minute."
    for n in range(60)
)


def test_markdown_sections_keep_their_heading_path_and_code_stays_whole() -> None:
    parsed = parse_markdown(GUIDE)
    assert parsed.title == "Widget Guide"
    chunks = chunk(parsed, count, max_tokens=120, overlap=20)
    for whole in ("```sh", "| option"):  # the code block and the table: never cut
        begin = GUIDE.index(whole)
        last = "```\n\n|" if whole == "```sh" else "print nothing        |"
        end = GUIDE.index(last, begin) + len(last.split("\n")[0])
        holders = [c for c in chunks if c.start <= begin < c.end]
        assert len(holders) == 1 and holders[0].end >= end, f"{whole} was cut"
        assert holders[0].heading == ("Widget Guide", "Install", "Linux")
    for c in chunks:
        assert GUIDE[c.start : c.end] == c.text
        assert count(c.text) <= 120


def test_a_heading_alone_joins_the_next_section() -> None:
    chunks = chunk(parse_markdown(GUIDE), count, max_tokens=120, overlap=20)
    assert not any(c.text.strip() == "## Install" for c in chunks)
    assert any(c.text.startswith("## Install") and "### Linux" in c.text for c in chunks)


def test_long_sections_split_at_sentences_with_overlap() -> None:
    chunks = [c for c in chunk(parse_markdown(GUIDE), count, max_tokens=80, overlap=20)
              if c.heading == ("Widget Guide", "Running")]  # fmt: skip
    assert len(chunks) > 3
    for a, b in itertools.pairwise(chunks):
        assert b.start < a.end, "neighbours overlap"
        assert b.end > a.end, "and each brings something new"
        assert a.text.rstrip().endswith("."), "cut between sentences"
        assert count(GUIDE[b.start : a.end]) <= 20 + 2


def test_html_drops_scripts_and_navigation_and_keeps_headings() -> None:
    page = """<!doctype html><html><head><title>Shop help</title><style>p{}</style></head>
    <body><nav><a href="/">Home</a> | <a href="/x">Menu item</a></nav>
    <script>var secret = "do not index";</script>
    <main><h1>Returns</h1><p>Items can be returned within <b>30 days</b>.</p>
    <h2>Refunds</h2><div>Refunds take five days.</div><ul><li>Card</li><li>PayPal</li></ul>
    <table><tr><th>Method</th><th>Days</th></tr><tr><td>Card</td><td>5</td></tr></table>
    </main><footer>Copyright</footer></body></html>"""
    parsed = parse_html(page)
    assert parsed.title == "Shop help"
    assert "secret" not in parsed.text and "Menu item" not in parsed.text
    assert "Copyright" not in parsed.text
    texts = {parsed.text[b.start : b.end]: b.heading for b in parsed.blocks}
    assert texts["Items can be returned within 30 days."] == ("Returns",)
    assert texts["Refunds take five days."] == ("Returns", "Refunds")
    assert texts["- PayPal"] == ("Returns", "Refunds")
    assert texts["Method | Days\nCard | 5"] == ("Returns", "Refunds")


def test_plain_text_is_split_into_paragraphs() -> None:
    parsed = parse_text("First para\nstill first.\n\n\nSecond para.\n  \nThird.")
    assert [parsed.text[b.start : b.end] for b in parsed.blocks] == [
        "First para\nstill first.", "Second para.", "Third."
    ]  # fmt: skip


async def test_ingest_markdown_file_with_sources(tmp_path: Path) -> None:
    path = tmp_path / "guide.md"
    path.write_text(GUIDE)
    memory = ListMemory()
    report = await ingest(memory, path, scope=Scope("acme"), chunk_tokens=120, overlap=20)
    assert report.document == str(path) and report.kind == "markdown"
    assert report.title == "Widget Guide" and report.chunks == len(report.ids) > 3
    items = [memory.items[i] for i in report.ids]
    windows = next(i for i in items if "MSI" in i.text)
    assert windows.source is not None
    assert windows.source.heading == "Widget Guide > Install > Windows"
    assert windows.source.title == "Widget Guide" and windows.source.document == str(path)
    assert GUIDE[windows.source.start : windows.source.end] == windows.text
    assert windows.metadata["document"] == str(path) and windows.metadata["kind"] == "markdown"
    assert cite(Hit(windows, 1.0)).startswith('Widget Guide, "Widget Guide > Install > Windows" (')


async def test_reingesting_replaces_the_old_chunks(tmp_path: Path) -> None:
    memory = ListMemory()
    scope = Scope("acme", user="u1")
    first = await ingest(memory, GUIDE, document="guide", scope=scope, chunk_tokens=120)
    writes = memory.writes
    again = await ingest(memory, GUIDE, document="guide", scope=scope, chunk_tokens=120)
    assert again.ids == first.ids and again.removed == 0
    assert memory.writes == writes, "unchanged chunks are not written again"
    shorter = GUIDE.replace("Restart when asked.", "No restart needed.").split("## Running")[0]
    third = await ingest(memory, shorter, document="guide", scope=scope, chunk_tokens=120)
    assert third.removed > 0
    assert sorted(memory.items) == sorted(third.ids), "nothing of the old version is left"
    assert any("No restart needed." in memory.items[i].text for i in third.ids)
    other = await ingest(memory, "Another document.", document="other", scope=scope)
    assert set(memory.items) == {*third.ids, *other.ids}, "other documents are untouched"


async def test_the_same_document_in_two_scopes_is_two() -> None:
    memory = ListMemory()
    a = await ingest(memory, "Shared text one.\n\nAnd two.", document="d", scope=Scope("a"))
    b = await ingest(memory, "Shared text one.\n\nAnd two.", document="d", scope=Scope("b"))
    assert set(a.ids).isdisjoint(b.ids) and len(memory.items) == len(a.ids) + len(b.ids)


async def test_ingest_pdf_keeps_pages_title_and_outline() -> None:
    pdf = make_pdf(
        [["Cats are small carnivores.", "They sleep a lot."], ["Dogs are loyal companions."]],
        title="Pets", outline=[("Cats", 0), ("Dogs", 1)],
    )  # fmt: skip
    memory = ListMemory()
    report = await ingest(memory, pdf, document="pets.pdf", scope=Scope())
    assert report.kind == "pdf" and report.title == "Pets"
    dogs = next(memory.items[i] for i in report.ids if "Dogs" in memory.items[i].text)
    assert dogs.metadata["page"] == 2 and dogs.source is not None and dogs.source.heading == "Dogs"
    assert cite(dogs) == 'Pets, "Dogs", p. 2 (pets.pdf#1)'


async def test_kinds_are_sniffed() -> None:
    memory = ListMemory()
    html = await ingest(
        memory, "<html><body><h1>T</h1><p>Para one here.</p></body></html>", scope=Scope()
    )
    md = await ingest(memory, "# Title\n\nSome *markdown* text.\n", scope=Scope())
    txt = await ingest(memory, "Just words.\n\nMore words.", scope=Scope())
    pdf = await ingest(memory, make_pdf([["PDF words."]]), scope=Scope())
    assert [r.kind for r in (html, md, txt, pdf)] == ["html", "markdown", "text", "pdf"]
    assert html.document.startswith("sha256:")


async def test_bad_input_is_refused_with_what_to_fix(tmp_path: Path) -> None:
    memory = ListMemory()
    with pytest.raises(ValueError, match="kind must be one of"):
        await ingest(memory, "x", kind="docx")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        await ingest(memory, tmp_path / "missing.md")
    with pytest.raises(ValueError, match="overlap"):
        await ingest(memory, "some text", chunk_tokens=40, overlap=30)
    with pytest.raises(ValueError, match="not a PDF"):
        await ingest(memory, b"%PDF-1.4 broken", kind="pdf")
    with pytest.raises(TypeError, match="source must be"):
        await ingest(memory, 42)  # type: ignore[arg-type]


paragraph = st.lists(
    st.sampled_from(["Alpha beta.", "Gamma delta epsilon!", "Zeta?", "longword" * 9, "x y z"]),
    min_size=1, max_size=30,
).map(" ".join)  # fmt: skip
section = st.tuples(st.integers(1, 3), st.sampled_from(["Intro", "Usage", "API"]),
                    st.lists(paragraph, min_size=0, max_size=4))  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(sections=st.lists(section, min_size=1, max_size=6), cap=st.integers(12, 120),
       overlap=st.integers(0, 6))  # fmt: skip
def test_chunks_stay_under_the_cap_and_cover_the_document(
    sections: list[tuple[int, str, list[str]]], cap: int, overlap: int
) -> None:
    source = "\n\n".join(
        "#" * level + " " + title + "\n\n" + "\n\n".join(paras) for level, title, paras in sections
    )
    parsed = parse_markdown(source)
    chunks = chunk(parsed, count, max_tokens=cap, overlap=overlap)
    covered = [False] * len(source)
    for c in chunks:
        assert count(c.text) <= cap
        assert source[c.start : c.end] == c.text
        for k in range(c.start, c.end):
            covered[k] = True
    for b in parsed.blocks:
        for k in range(b.start, b.end):
            assert covered[k] or source[k].isspace(), f"{source[k]!r} at {k} is in no chunk"
