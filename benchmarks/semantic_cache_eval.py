"""Precision and recall of the semantic cache on its labelled set, by threshold.

    python benchmarks/semantic_cache_eval.py

For each pair of tests/data/semantic_cache_pairs.json, ``stored`` is cached (in a
scope of its own) and ``query`` looked up; a hit where the label says miss is a wrong
hit. Printed per threshold with the guards (the cache as shipped) and on the cosine
alone, with the wrong hits named.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from mainspring.models.cache_guard import signature
from mainspring.models.embeddings_local import LocalEmbeddings
from mainspring.models.semantic_cache import SemanticCache

PAIRS = Path(__file__).parent.parent / "tests" / "data" / "semantic_cache_pairs.json"


async def evaluate(threshold: float, guarded: bool = True) -> tuple[float, float, list[str]]:
    pairs = json.loads(PAIRS.read_text())["pairs"]
    cache: SemanticCache[str] = SemanticCache(LocalEmbeddings(), threshold=threshold)
    hits = wrong = found = 0
    wrong_hits = []
    for i, pair in enumerate(pairs):
        await cache.store(pair["stored"], pair["stored"], scope=str(i))
        if not guarded:  # the cosine alone: the stored entry agrees with any lookup
            entry = next(iter(cache._entries.values()))
            entry.sig = signature(pair["query"])
        got = await cache.lookup(pair["query"], scope=str(i))
        cache.clear()
        if got is None:
            continue
        hits += 1
        if pair["hit"]:
            found += 1
        else:
            wrong += 1
            wrong_hits.append(f"{pair['kind']}: {pair['stored']!r} -> {pair['query']!r}")
    should = sum(p["hit"] for p in pairs)
    precision = (hits - wrong) / hits if hits else 1.0
    return precision, found / should, wrong_hits


async def main() -> None:
    print("threshold  precision  recall  | cosine only: precision  recall")
    for t in (0.70, 0.75, 0.80, 0.85, 0.90, 0.95):
        p, r, wrong = await evaluate(t)
        p0, r0, _ = await evaluate(t, guarded=False)
        print(f"{t:9.2f}  {p:9.3f}  {r:6.3f}  | {p0:22.3f}  {r0:6.3f}")
        for w in wrong:
            print(f"           wrong hit: {w}")


if __name__ == "__main__":
    asyncio.run(main())
