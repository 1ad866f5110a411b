"""Hybrid ranking: reciprocal rank fusion of the vector and the keyword result lists.

RRF (Cormack et al., 2009) adds ``1 / (k + rank)`` over the lists an item appears in:
it needs no calibration between cosine and BM25 scores (which live on unrelated
scales and differ between SQLite FTS5 and PostgreSQL), and an item both lists agree
on beats one that only one list ranks first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

RRF_K = 60  # the constant of the original paper; damps the head of each list


@dataclass(slots=True)
class Fused:
    id: str
    score: float
    vector: float | None = None
    keyword: float | None = None


def fuse(
    vector: Sequence[tuple[str, float]],
    keyword: Sequence[tuple[str, float]],
    *,
    k: int = RRF_K,
) -> list[Fused]:
    """Both lists (id, score), best first, fused and sorted best first."""
    fused: dict[str, Fused] = {}
    for rank, (id_, cosine) in enumerate(vector):
        fused[id_] = Fused(id_, 1.0 / (k + rank + 1), vector=cosine)
    for rank, (id_, bm25) in enumerate(keyword):
        entry = fused.get(id_)
        if entry is None:
            entry = fused[id_] = Fused(id_, 0.0)
        entry.score += 1.0 / (k + rank + 1)
        entry.keyword = bm25
    # Ties (same ranks) go to the better cosine, then the id, so results are stable.
    return sorted(fused.values(), key=lambda f: (-f.score, -(f.vector or -2.0), f.id))
