"""W14: semantic search over 100,000 items, side by side with LanceDB on the same vectors.

    PYTHONPATH=. python benchmarks/memory_search.py [--quick] [--json] [--pg-url URL]

What it measures, in one run (``--quick``: 10,000 items and fewer queries):

* search: recall@10 against exact search (numpy over every vector) and p50/p99 latency
  of :class:`SemanticMemory` on SQLite, ``mode="vector"`` and ``mode="hybrid"``, and of
  LanceDB (IVF_HNSW_SQ index, cosine) on the same vectors, queries interleaved so that
  each query meets every contender under the same load. Query embedding is excluded
  (the memory's embedding provider looks the query's vector up; LanceDB gets the
  vector) and reported on its own;
* the shared backend: the same searches on PostgreSQL (the index is in process, so
  its p99 should be close to SQLite's), and ``add()`` latency on both;
* write to visibility: ``add()`` of a new text (embedded for real, off the caller's
  path) until a ``fresh=False`` vector search returns it; LanceDB's is embedding the
  text and ``table.add`` (visible when it returns);
* embedding on one core: texts/s in batches of 32, ms per single text.

Texts and vectors: ``memory_corpus.py`` (docstring sentences, all-MiniLM-L6-v2 int8),
embedded once and cached in ``~/.cache/mainspring-bench/``. The LanceDB table and its
index are cached there too (building the index is not what is measured).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import memory_corpus
from mainspring.memory.scope import Scope
from mainspring.memory.semantic.memory import Mode, SemanticMemory
from mainspring.memory.semantic.protocols import ItemStore
from mainspring.models.embeddings_local import MODEL_NAME, LocalEmbeddings

from harness import Result, at_least, at_most
from report import print_json, print_table

Vectors = memory_corpus.Vectors
K = 10
LOAD_BATCH = 2_000


class LookupEmbeddings:
    """The model's vectors of known texts, looked up; anything else embedded for real.

    So that search latency excludes the query's embedding (reported on its own), and a
    new text still costs what it costs."""

    name = MODEL_NAME
    dimensions = 384

    def __init__(self, texts: Sequence[str], vectors: Vectors) -> None:
        self._known = {t: i for i, t in enumerate(texts)}
        self._vectors = vectors
        self._model = LocalEmbeddings()

    def add(self, texts: Sequence[str], vectors: Vectors) -> None:
        start = len(self._vectors)
        self._vectors = np.concatenate([self._vectors, vectors])
        self._known.update((t, start + i) for i, t in enumerate(texts))

    def embed_array(self, texts: Sequence[str]) -> Vectors:
        rows = [self._known.get(t) for t in texts]
        if all(r is not None for r in rows):
            return self._vectors[rows]  # type: ignore[index]
        return self._model.embed_array(texts)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        result: list[list[float]] = self.embed_array(texts).tolist()
        return result


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def recall(found: Sequence[Sequence[str]], truth: Sequence[Sequence[str]]) -> float:
    hits = sum(len(set(f[:K]) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / (K * len(truth))


# -- the contenders ----------------------------------------------------------------------


async def load_memory(store: ItemStore, corpus: memory_corpus.Corpus) -> SemanticMemory:
    """A memory over the corpus, written through the item store in bulk and indexed from
    its change feed (as a worker that starts on an existing store does)."""
    from mainspring.memory.semantic.items import MemoryItem

    now = time.time() - 3600
    for start in range(0, len(corpus.texts), LOAD_BATCH):
        texts = corpus.texts[start : start + LOAD_BATCH]
        items = [
            # PostgreSQL cannot store U+0000, which a few docstrings hold.
            MemoryItem(
                id=f"d{start + i}",
                text=t.replace("\x00", " "),
                scope=Scope(),
                recorded_at=now,
                updated_at=now,
            )
            for i, t in enumerate(texts)
        ]
        vectors = corpus.vectors[start : start + LOAD_BATCH]
        await store.put(items, list(vectors))
    embeddings = LookupEmbeddings(
        corpus.texts + corpus.queries, np.concatenate([corpus.vectors, corpus.query_vectors])
    )
    memory = SemanticMemory(store, embeddings=embeddings, supersede=None)
    await memory.__aenter__()
    # Above 10k vectors the HNSW graph is built in a thread while the exact index
    # answers: measure the graph, once it is there.
    _, indexes = memory.indexes.snapshot()
    for index in indexes.values():
        settle = getattr(index, "settle", None)
        if settle is not None:
            await asyncio.to_thread(settle)
    return memory


def lancedb_table(corpus: memory_corpus.Corpus, n: int) -> Any:
    import lancedb
    import pyarrow as pa
    from lancedb.index import IvfHnswSq

    digest = memory_corpus.digest(corpus.texts)
    db = lancedb.connect(str(memory_corpus.CACHE / f"lancedb_{n}_{digest}"))
    if "items" in db.list_tables().tables:
        table = db.open_table("items")
        if table.list_indices():
            return table
        db.drop_table("items")
    column = pa.FixedSizeListArray.from_arrays(pa.array(corpus.vectors.ravel()), 384)
    ids = pa.array([f"d{i}" for i in range(n)])
    table = db.create_table("items", data=pa.table({"id": ids, "vector": column}))
    print(f"building LanceDB's IVF_HNSW_SQ index over {n} vectors ...", file=sys.stderr)
    partitions = max(1, n // 25_000)  # HNSW within each partition: few, large ones
    table.create_index(
        "vector", config=IvfHnswSq(distance_type="cosine", num_partitions=partitions)
    )
    return table


def lancedb_search(table: Any, vector: Vectors) -> list[str]:
    query = table.search(vector).distance_type("cosine").limit(K).select(["id", "_distance"])
    return [str(i) for i in query.to_arrow().column("id").to_pylist()]


# -- measurements ------------------------------------------------------------------------

Search = Callable[[int], Awaitable[list[str]]]


class Measured:
    """One contender's answers: wall and CPU seconds (all threads) per query, ids found."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.found: list[list[str]] = []


async def interleaved(searches: dict[str, Search], queries: int) -> dict[str, Measured]:
    """Every contender answers every query; the order rotates per query."""
    names = list(searches)
    out = {n: Measured() for n in names}
    for q in range(min(20, queries)):  # warm-up
        for name in names:
            await searches[name](q)
    gc.collect()
    gc.disable()
    try:
        for q in range(queries):
            shift = q % len(names)
            for name in names[shift:] + names[:shift]:
                cpu, start = time.process_time(), time.perf_counter()
                found = await searches[name](q)
                out[name].wall.append(time.perf_counter() - start)
                out[name].cpu.append(time.process_time() - cpu)
                out[name].found.append(found)
            if q % 100 == 99:
                gc.collect()
    finally:
        gc.enable()
    return out


async def add_latency(memory: SemanticMemory, texts: Sequence[str]) -> list[float]:
    times = []
    for text in texts:
        start = time.perf_counter()
        await memory.add(text)
        times.append(time.perf_counter() - start)
    await memory.settle()
    return times


PROBE = "probe: "  # a query text whose vector is looked up: the new text's own vector


async def visibility(
    memory: SemanticMemory, texts: Sequence[str]
) -> tuple[list[float], list[float], int]:
    """(add() latency, add() start to a fresh=False vector search finding it), seconds,
    and how many writes were not found within 30 s.

    The search asks with the new text's own vector (looked up under PROBE + text, so
    polling costs no model call), while the memory embeds the new text for real. A
    write the resolver merges into an older item is found as that item."""
    adds, visible, lost = [], [], 0
    for text in texts:
        start = time.perf_counter()
        result = await memory.add(text)
        adds.append(time.perf_counter() - start)
        final = asyncio.ensure_future(memory.settle(result.id))
        wanted = {result.id, result.duplicate_of}
        while time.perf_counter() - start < 30:
            hits = await memory.search(PROBE + text, mode="vector", limit=K, fresh=False)
            if wanted & {h.item.id for h in hits}:
                visible.append(time.perf_counter() - start)
                break
            if final.done() and final.result().duplicate_of is not None:
                wanted.add(final.result().duplicate_of)
            await asyncio.sleep(0.0005)  # leave the GIL to the embedding thread
        else:
            lost += 1
        await final
    return adds, visible, lost


def lancedb_visibility(table: Any, texts: Sequence[str]) -> list[float]:
    import pyarrow as pa

    model = LocalEmbeddings()
    times = []
    for n, text in enumerate(texts):
        start = time.perf_counter()
        vector = model.embed_array([text])
        column = pa.FixedSizeListArray.from_arrays(pa.array(vector.ravel()), 384)
        table.add(pa.table({"id": [f"new{n}-{uuid.uuid4().hex[:6]}"], "vector": column}))
        times.append(time.perf_counter() - start)
    return times


def embedding_speed(texts: Sequence[str], singles: int) -> tuple[float, list[float]]:
    """(texts/s in batches of 32, seconds per single text), on one core."""
    model = LocalEmbeddings(threads=1)
    model.load()
    batch = list(texts[:512])
    model.embed_array(batch[:32])
    start = time.process_time()
    for i in range(0, len(batch), 32):
        model.embed_array(batch[i : i + 32])
    rate = len(batch) / (time.process_time() - start)
    times = []
    for text in texts[512 : 512 + singles]:
        start = time.perf_counter()
        model.embed_array([text])
        times.append(time.perf_counter() - start)
    return rate, times


# -- the run -----------------------------------------------------------------------------


def ms(seconds: float) -> float:
    return seconds * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 items, fewer queries")
    parser.add_argument("--json", action="store_true", help="one JSON line per result")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--items", type=int, help="override the item count")
    opts = parser.parse_args()
    os.environ.setdefault("LANCE_LOG", "error")  # its deprecation warnings, once per search
    n = opts.items or (10_000 if opts.quick else 100_000)
    queries = 300 if opts.quick else 1_000
    writes = 50 if opts.quick else 200
    corpus = memory_corpus.load(n)  # 1,000 query vectors, the same in both modes
    query_vectors = corpus.query_vectors[:queries]
    truth_scores = query_vectors @ corpus.vectors.T
    truth = [[f"d{i}" for i in np.argsort(-row)[:K]] for row in truth_scores]
    del truth_scores
    results: list[Result] = []
    emit = print_json if opts.json else (lambda r: None)

    with tempfile.TemporaryDirectory() as tmp:
        from mainspring.memory.semantic.sqlite import SQLiteItemStore

        started = time.perf_counter()
        sqlite = await load_memory(await SQLiteItemStore.open(Path(tmp) / "memory.db"), corpus)
        load_s = time.perf_counter() - started
        table = lancedb_table(corpus, n)

        def vector_search(memory: SemanticMemory, mode: Mode, fresh: bool = False) -> Search:
            async def search(q: int) -> list[str]:
                hits = await memory.search(corpus.queries[q], mode=mode, limit=K, fresh=fresh)
                return [h.item.id for h in hits]

            return search

        async def lance(q: int) -> list[str]:
            return lancedb_search(table, query_vectors[q])

        searches: dict[str, Search] = {
            "sqlite-vector": vector_search(sqlite, "vector"),
            "sqlite-hybrid": vector_search(sqlite, "hybrid"),
            "lancedb": lance,
        }
        pg = None
        pg_schema = f"bench_w14_{uuid.uuid4().hex[:8]}"
        try:
            from mainspring.memory.semantic.postgres import PostgresItemStore

            url = f"{opts.pg_url}{'&' if '?' in opts.pg_url else '?'}schema={pg_schema}"
            pg = await load_memory(await PostgresItemStore.open(url), corpus)
            await analyze(opts.pg_url, pg_schema)
            searches["pg-vector"] = vector_search(pg, "vector")
            searches["pg-hybrid"] = vector_search(pg, "hybrid")
            # fresh=True reads the change feed first: other workers' writes are seen.
            searches["pg-vector-fresh"] = vector_search(pg, "vector", fresh=True)
        except (OSError, ImportError) as exc:
            print(f"PostgreSQL skipped: {exc}", file=sys.stderr)

        measured = await interleaved(searches, queries)
        p = {
            name: (ms(percentile(m.wall, 0.5)), ms(percentile(m.wall, 0.99)))
            for name, m in measured.items()
        }
        cpu = {name: ms(percentile(m.cpu, 0.5)) for name, m in measured.items()}
        r = {name: recall(m.found, truth) for name, m in measured.items()}
        common = {
            "items": n,
            "queries": queries,
            "texts": corpus.source,
            "load_s": round(load_s, 1),
        }

        def search_result(name: str, label: str) -> Result:
            return Result(
                f"W14 search p99, {label}, {n // 1000}k",
                p[name][1],
                p["lancedb"][1],
                "ms",
                checks=[
                    at_most(p[name][1], 5.0, "p99 <= 5 ms"),
                    at_least(r[name], 0.95, "recall@10 >= 0.95"),
                ],
                extra={
                    "p50_ms": p[name][0],
                    "cpu_p50_ms": cpu[name],
                    "recall_at_10": r[name],
                    "anchor_p50_ms": p["lancedb"][0],
                    "anchor_cpu_p50_ms": cpu["lancedb"],
                    "anchor_recall_at_10": r["lancedb"],
                    "anchor_is": "LanceDB 0.41 IVF_HNSW_SQ, cosine",
                    **common,
                },
            )

        results.append(search_result("sqlite-vector", "SQLite, vector"))
        results.append(search_result("sqlite-hybrid", "SQLite, hybrid"))
        results[-1].checks.pop()  # hybrid's top 10 is not the exact vector top 10 by design
        if pg is not None:
            results.append(search_result("pg-vector", "PostgreSQL, vector"))
            results.append(search_result("pg-hybrid", "PostgreSQL, hybrid"))
            results[-1].checks.pop()
            results.append(search_result("pg-vector-fresh", "PostgreSQL, vector, fresh=True"))
        for result in results:
            emit(result)

        new_texts = corpus.spare[:writes]  # held out: not in the memory, not embedded
        probes = LocalEmbeddings().embed_array(new_texts[: writes // 2])
        lookup = sqlite.embeddings
        assert isinstance(lookup, LookupEmbeddings)
        lookup.add([PROBE + t for t in new_texts[: writes // 2]], probes)
        adds, visible, lost = await visibility(sqlite, new_texts[: writes // 2])
        lance_visible = lancedb_visibility(table, new_texts[writes // 2 :])
        results.append(
            Result(
                "W14 write to visibility p99, SQLite",
                ms(percentile(visible, 0.99)),
                ms(percentile(lance_visible, 0.99)),
                "ms",
                extra={
                    "p50_ms": ms(percentile(visible, 0.5)),
                    "add_p50_ms": ms(percentile(adds, 0.5)),
                    "add_p99_ms": ms(percentile(adds, 0.99)),
                    "anchor_p50_ms": ms(percentile(lance_visible, 0.5)),
                    "anchor_is": "LanceDB: embed + table.add (visible on return)",
                    "writes": len(adds),
                    "not_found_in_30s": lost,
                },
            )
        )
        emit(results[-1])
        if pg is not None:
            extra_texts = corpus.spare[writes : 2 * writes]
            pg_adds = await add_latency(pg, extra_texts[: writes // 2])
            sqlite_adds = await add_latency(sqlite, extra_texts[writes // 2 :])
            results.append(
                Result(
                    "W14 add() p99, PostgreSQL (anchor: SQLite)",
                    ms(percentile(pg_adds, 0.99)),
                    ms(percentile(sqlite_adds, 0.99)),
                    "ms",
                    extra={
                        "p50_ms": ms(percentile(pg_adds, 0.5)),
                        "anchor_p50_ms": ms(percentile(sqlite_adds, 0.5)),
                    },
                )
            )
            emit(results[-1])
            await pg.aclose()
            await drop_schema(opts.pg_url, pg_schema)
        await sqlite.aclose()

    rate, singles = embedding_speed(corpus.texts, 200 if opts.quick else 500)
    results.append(
        Result(
            "W14 embedding throughput, batches of 32, 1 core",
            rate,
            None,
            "texts/s",
            higher_is_better=True,
            extra={"model": MODEL_NAME, "per_text_ms_cpu": 1000 / rate},
        )
    )
    emit(results[-1])
    results.append(
        Result(
            "W14 embedding latency, one text, 1 core",
            ms(percentile(singles, 0.5)),
            None,
            "ms p50",
            extra={"p99_ms": ms(percentile(singles, 0.99)), "model": MODEL_NAME},
        )
    )
    emit(results[-1])
    if not opts.json:
        print_table(results, title="W14 semantic memory search", context=corpus.source)


async def analyze(url: str, schema: str) -> None:
    """What autovacuum does after a bulk load (the planner's and keyword search's word
    statistics), done now rather than at some point during the measurement."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'ANALYZE "{schema}".memory_items')
    finally:
        await conn.close()


async def drop_schema(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
