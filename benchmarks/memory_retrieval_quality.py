"""Retrieval quality: does semantic memory find the passage that answers a question?

    python benchmarks/memory_retrieval_quality.py [--quick] [--json] [--backend auto|semantic|exact]

The set (see ``qa_fixtures.py``): 49 questions of SQuAD, QuAC, DROP, Quoref and
TriviaQA over their 28 passages and pages (550 KB), from the ``allennlp==0.9.0`` wheel.
Every passage is ingested with :func:`mainspring.memory.knowledge.ingest` (200-token
chunks, 30 overlapping); a question is answered when a chunk of one of its passages that
contains an answer (or, for an answer the text never spells out, such as a DROP count,
any chunk of its passages) is among the first k hits. Reported per search mode (vector,
keyword, hybrid): recall@1, @5, @10 and MRR@10.

Backends: ``semantic`` is ``SemanticMemory`` (embedded, SQLite) when this checkout has
it; ``exact`` is the labelled fallback: the same local embeddings (MiniLM int8) with an
exact cosine scan, a plain BM25 and reciprocal-rank fusion, all in this file.
``auto`` (the default) takes ``semantic`` when it imports.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import importlib
import math
import re
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from mainspring.memory.knowledge import ingest
from mainspring.memory.scope import Scope
from mainspring.memory.semantic.items import Hit, MemoryItem, Source, WriteResult

import qa_fixtures
from harness import Result
from report import print_json, print_table

MODES = ("vector", "keyword", "hybrid")
KS = (1, 5, 10)
SCOPE = Scope("bench")
_WORD = re.compile(r"\w+")


class ExactMemory:
    """The fallback: items in a dict, embedded at the first search, searched exactly."""

    def __init__(self) -> None:
        from mainspring.models.embeddings_local import LocalEmbeddings

        self.embeddings = LocalEmbeddings(threads=2)
        self.items: dict[str, MemoryItem] = {}
        self._ids: list[str] = []
        self._vectors: Any = None
        self._bm25: _BM25 | None = None

    async def add(
        self, text: str, *, scope: Scope, metadata: Mapping[str, Any] | None = None,
        source: Source | None = None, id: str | None = None,
    ) -> WriteResult:  # fmt: skip
        assert id is not None
        self.items[id] = MemoryItem(id, text, scope, dict(metadata or {}), source=source)
        self._vectors = None
        return WriteResult(id, "pending")

    async def list(
        self, scope: Scope, *, filters: Mapping[str, Any] | None = None,
        include_superseded: bool = False, limit: int = 100, after: str | None = None,
    ) -> list[MemoryItem]:  # fmt: skip
        rows = sorted(
            (i for i in self.items.values()
             if all(i.metadata.get(k) == v for k, v in (filters or {}).items())
             and (after is None or i.id > after)),
            key=lambda i: i.id,
        )  # fmt: skip
        return rows[:limit]

    async def forget(self, ids: str | Sequence[str], *, tenant: str = "") -> int:
        ids = [ids] if isinstance(ids, str) else ids
        return sum(self.items.pop(i, None) is not None for i in ids)

    async def search(
        self, query: str, *, scope: Scope, limit: int, mode: str
    ) -> builtins.list[Hit]:
        if self._vectors is None:
            self._ids = list(self.items)
            texts = [self.items[i].text for i in self._ids]
            self._vectors = await anyio.to_thread.run_sync(self.embeddings.embed_array, texts)
            self._bm25 = _BM25(texts)
        assert self._bm25 is not None
        ranked: list[tuple[int, float]] = []
        if mode in ("vector", "hybrid"):
            q = self.embeddings.embed_array([query])[0]
            scores = self._vectors @ q
            top = np.argsort(-scores)[: max(limit, 50)]
            ranked = [(int(i), float(scores[i])) for i in top]
        if mode in ("keyword", "hybrid"):
            keyword = self._bm25.top(query, max(limit, 50))
            ranked = keyword if mode == "keyword" else _rrf(ranked, keyword)
        return [Hit(self.items[self._ids[i]], s) for i, s in ranked[:limit]]


class _BM25:
    def __init__(self, texts: list[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.docs = [Counter(_WORD.findall(t.lower())) for t in texts]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.avg = sum(self.lengths) / max(1, len(self.docs))
        df: Counter[str] = Counter()
        for d in self.docs:
            df.update(d.keys())
        n = len(self.docs)
        self.idf = {w: math.log(1 + (n - f + 0.5) / (f + 0.5)) for w, f in df.items()}
        self.k1, self.b = k1, b

    def top(self, query: str, k: int) -> list[tuple[int, float]]:
        terms = [w for w in _WORD.findall(query.lower()) if w in self.idf]
        scores = []
        for i, (doc, length) in enumerate(zip(self.docs, self.lengths, strict=True)):
            s = 0.0
            for w in terms:
                tf = doc.get(w, 0)
                if tf:
                    norm = tf + self.k1 * (1 - self.b + self.b * length / self.avg)
                    s += self.idf[w] * tf * (self.k1 + 1) / norm
            if s > 0:
                scores.append((i, s))
        scores.sort(key=lambda x: -x[1])
        return scores[:k]


def _rrf(*lists: list[tuple[int, float]], k: int = 60) -> list[tuple[int, float]]:
    fused: dict[int, float] = {}
    for ranked in lists:
        for rank, (i, _) in enumerate(ranked):
            fused[i] = fused.get(i, 0.0) + 1 / (k + rank + 1)
    return sorted(fused.items(), key=lambda x: -x[1])


@contextlib.asynccontextmanager
async def open_memory(backend: str, workdir: Path) -> AsyncIterator[tuple[str, Any]]:
    if backend in ("auto", "semantic"):
        try:  # h-semantic's SemanticMemory, where this checkout has it
            semantic = importlib.import_module("mainspring.memory.semantic.memory")
        except ImportError:
            if backend == "semantic":
                raise
        else:
            SemanticMemory = semantic.SemanticMemory
            url = f"sqlite:///{workdir / 'semantic.db'}"
            async with SemanticMemory.open(url, supersede=None) as memory:
                yield "semantic (SemanticMemory on SQLite, local MiniLM int8)", memory
            return
    yield (
        "exact (fallback: local MiniLM int8, exact cosine, BM25 in the benchmark, RRF)",
        ExactMemory(),
    )


def relevant(question: qa_fixtures.Question, chunks: list[MemoryItem]) -> set[str]:
    mine = [c for c in chunks if c.metadata.get("document") in question.docs]
    answers = [a.lower() for a in question.answers if a.strip()]
    with_answer = {c.id for c in mine if any(a in c.text.lower() for a in answers)}
    return with_answer or {c.id for c in mine}


async def measure(backend: str, quick: bool, workdir: Path) -> list[Result]:
    docs, questions = qa_fixtures.load()
    async with open_memory(backend, workdir) as (label, memory):
        t0 = time.perf_counter()
        for doc in docs.values():
            await ingest(memory, doc.text, document=doc.id, title=doc.title, kind="text",
                         scope=SCOPE)  # fmt: skip
        if hasattr(memory, "settle"):
            await memory.settle()
        ingest_s = time.perf_counter() - t0
        chunks = await _all(memory)
        truth = {q.id: relevant(q, chunks) for q in questions}
        results = []
        for mode in MODES:
            ranks = []
            await memory.search(questions[0].text, scope=SCOPE, limit=1, mode=mode)  # warm
            t1 = time.perf_counter()
            for q in questions:
                hits = await memory.search(q.text, scope=SCOPE, limit=max(KS), mode=mode)
                found = [n for n, h in enumerate(hits, 1) if h.item.id in truth[q.id]]
                ranks.append(found[0] if found else None)
            per_query_ms = (time.perf_counter() - t1) * 1e3 / len(questions)
            recall = {k: sum(r is not None and r <= k for r in ranks) / len(ranks) for k in KS}
            mrr = sum(1 / r for r in ranks if r is not None) / len(ranks)
            by_source = {
                s: round(sum(r is not None and r <= 10 for q, r in zip(questions, ranks, strict=True)
                             if q.source == s) / sum(q.source == s for q in questions), 3)
                for s in sorted({q.source for q in questions})
            }  # fmt: skip
            results.append(Result(
                f"retrieval-{mode}", recall[10], None, "recall@10", higher_is_better=True,
                extra={
                    "recall@1": recall[1], "recall@5": recall[5], "mrr@10": mrr,
                    "recall@10_by_set": by_source, "search_ms": per_query_ms,
                    "questions": len(questions), "passages": len(docs), "chunks": len(chunks),
                    "ingest_s": ingest_s, "backend": label,
                    "dataset": "allennlp==0.9.0 wheel fixtures: SQuAD, QuAC, DROP, Quoref, TriviaQA",
                },
            ))  # fmt: skip
    return results


async def _all(memory: Any) -> list[MemoryItem]:
    out: list[MemoryItem] = []
    after = None
    while True:
        page = await memory.list(SCOPE, limit=500, after=after)
        out.extend(page)
        if len(page) < 500:
            return out
        after = page[-1].id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the same run (it takes ~1 min)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--backend", choices=("auto", "semantic", "exact"), default="auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = anyio.run(measure, args.backend, args.quick, Path(tmp))
    if args.json:
        for r in results:
            print_json(r)
    else:
        print_table(results, title="Retrieval quality", context=results[0].extra["backend"])


if __name__ == "__main__":
    main()
