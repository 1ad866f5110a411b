"""Measure semantic memory's de-duplication and contradiction rule on labelled pairs.

``tests/data/fact_pairs.json`` holds 96 hand-made (old, new) fact pairs: 32 duplicates
(paraphrases), 32 updates/contradictions (same subject, another value) and 32
similar-but-distinct facts (another subject, or another fact about the same thing).
For the default :class:`~mainspring.memory.semantic.resolver.SimilarityResolver` at
its default thresholds this prints precision and recall of "duplicate" and of
"supersedes", next to a cosine-only baseline, and a 2-fold cross-validation of the
threshold choice (fit on one half of the pairs, score on the other) because the
defaults were chosen on this same set.

    PYTHONPATH=$PWD python benchmarks/semantic_resolver_eval.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mainspring.memory.semantic.memory import DEFAULT_DEDUPE, DEFAULT_SUPERSEDE
from mainspring.memory.semantic.resolver import SimilarityResolver
from mainspring.models.embeddings_local import LocalEmbeddings

PAIRS = Path(__file__).parent.parent / "tests" / "data" / "fact_pairs.json"


def scores(pred: list[str], labels: list[str], label: str) -> tuple[float, float]:
    tp = sum(p == label == g for p, g in zip(pred, labels, strict=True))
    fp = sum(p == label != g for p, g in zip(pred, labels, strict=True))
    fn = sum(g == label != p for p, g in zip(pred, labels, strict=True))
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1)


def predict(
    pairs: list[dict[str, str]], sims: np.ndarray, dedupe: float, supersede: float
) -> list[str]:
    rule = SimilarityResolver(dedupe, supersede)
    return [rule.decide(p["old"], p["new"], float(s)) for p, s in zip(pairs, sims, strict=True)]


def fit(pairs: list[dict[str, str]], sims: np.ndarray) -> tuple[float, float]:
    """Thresholds with precision >= 0.9 on both labels and the most recall."""
    labels = [p["label"] for p in pairs]
    best: tuple[float, float, float] = (-1.0, 0.9, 0.8)
    for d in np.arange(0.75, 0.96, 0.01):
        for s in np.arange(0.6, 0.9, 0.01):
            pred = predict(pairs, sims, float(d), float(s))
            pd, rd = scores(pred, labels, "duplicate")
            ps, rs = scores(pred, labels, "supersedes")
            if pd >= 0.9 and ps >= 0.9 and rd + rs > best[0]:
                best = (rd + rs, float(d), float(s))
    return best[1], best[2]


def main() -> None:
    pairs = json.loads(PAIRS.read_text())["pairs"]
    labels = [p["label"] for p in pairs]
    model = LocalEmbeddings()
    old = model.embed_array([p["old"] for p in pairs])
    new = model.embed_array([p["new"] for p in pairs])
    sims = (old * new).sum(axis=1)
    print(
        f"{len(pairs)} pairs: " + ", ".join(f"{k} {labels.count(k)}" for k in sorted(set(labels)))
    )
    pred = predict(pairs, sims, DEFAULT_DEDUPE, DEFAULT_SUPERSEDE)
    for label in ("duplicate", "supersedes"):
        p, r = scores(pred, labels, label)
        print(
            f"default rule (dedupe {DEFAULT_DEDUPE}, supersede {DEFAULT_SUPERSEDE}): "
            f"{label:10} precision {p:.2f} recall {r:.2f}"
        )
    for d in (0.8, 0.85, 0.9):
        cos_only = ["duplicate" if s >= d else "distinct" for s in sims]
        p, r = scores(cos_only, labels, "duplicate")
        print(f"cosine only >= {d}: duplicate precision {p:.2f} recall {r:.2f}")
    # 2-fold cross-validation: pairs alternate into two halves (labels stay balanced).
    folds = [pairs[0::2], pairs[1::2]]
    fold_sims = [sims[0::2], sims[1::2]]
    for i in (0, 1):
        d, s = fit(folds[i], fold_sims[i])
        held = folds[1 - i]
        pred = predict(held, fold_sims[1 - i], d, s)
        held_labels = [p["label"] for p in held]
        pd, rd = scores(pred, held_labels, "duplicate")
        ps, rs = scores(pred, held_labels, "supersedes")
        print(
            f"fold {i}: fit dedupe {d:.2f} supersede {s:.2f} -> held out: duplicate P {pd:.2f} "
            f"R {rd:.2f}, supersedes P {ps:.2f} R {rs:.2f}"
        )
    for p, s, g in zip(
        pairs,
        sims,
        pred if False else predict(pairs, sims, DEFAULT_DEDUPE, DEFAULT_SUPERSEDE),
        strict=True,
    ):
        if g != p["label"]:
            print(
                f"  miss: {p['label']:>10} judged {g:10} cos {s:.3f}: {p['old']!r} -> {p['new']!r}"
            )


if __name__ == "__main__":
    main()
