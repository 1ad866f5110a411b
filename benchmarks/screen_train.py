"""Train the screen's injection classifier from the labelled set the project ships.

    python benchmarks/screen_train.py            # writes the package data, prints a summary

Reads only benchmarks/screen_data/dataset.jsonl.gz (its train split: the test split is
never read here) and writes mainspring/guard/screen/data/injection_classifier.json.gz.
Deterministic: a fixed seed, full-batch optimisation, sorted vocabularies; running it
twice writes the same bytes. Needs numpy (the ``embeddings`` extra has it), at training
time only: inference is pure Python.

The model: logistic regression on the presence of word unigrams and word bigrams
(mainspring/guard/screen/features.py), scaled by the window's size, balanced
class weights, L2. A long text is scored as its windows (the highest wins), so training
sees windows too: every window of a benign text is benign; of a long injected text, only
its window the first model scores highest is taken as the injection (the rest of such a
document is usually benign carrier text).

The threshold: chosen on a calibration part of the train split (a seeded fifth of its
texts, held out of a first fit) as the lowest probability that keeps that part's
false-positive rate at or below 1% (and between 0.5 and 0.9), then the model is refitted
on the whole train split. (Calibrating on whole held-out families was tried first: with
so few benign families, one unseen family of JSON tool outputs decided the threshold.)
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mainspring.guard.screen.features import scale, windows  # noqa: E402

DATASET = REPO / "benchmarks" / "screen_data" / "dataset.jsonl.gz"
OUT = REPO / "mainspring" / "guard" / "screen" / "data" / "injection_classifier.json.gz"
SEED = 13
L2 = 1e-4
STEPS = 400
KEEP = 0.02  # weights smaller than this are dropped from the shipped model (size, speed)
TARGET_FPR = 0.01


def load(split: str) -> list[dict[str, Any]]:
    with gzip.open(DATASET, "rt", encoding="utf-8") as f:
        return [r for r in map(json.loads, f) if r["split"] == split]


def bucket(key: str) -> float:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32


class Data:
    """Feature sets as a sparse 0/1 matrix (row index arrays) over a vocabulary."""

    def __init__(self, rows: list[set[str]], vocab: dict[str, int]) -> None:
        idx = [np.array(sorted(vocab[f] for f in r if f in vocab), dtype=np.int64) for r in rows]
        self.lengths = np.array([len(r) or 1 for r in rows], dtype=np.float64)
        self.indices = np.concatenate(idx) if idx else np.zeros(0, dtype=np.int64)
        self.row_of = np.repeat(np.arange(len(rows)), [len(i) for i in idx])
        self.scale = np.array([scale(r) for r in rows])
        self.n, self.v = len(rows), len(vocab)

    def dot(self, w: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.bincount(self.row_of, weights=w[self.indices], minlength=self.n)
        scaled: np.ndarray = out * self.scale
        return scaled

    def tdot(self, r: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.bincount(
            self.indices, weights=(r * self.scale)[self.row_of], minlength=self.v
        )
        return out


def fit(rows: list[set[str]], y: np.ndarray) -> tuple[dict[str, float], float]:
    df: dict[str, int] = {}
    for r in rows:
        for f in r:
            df[f] = df.get(f, 0) + 1
    vocab = {f: i for i, f in enumerate(sorted(f for f, c in df.items() if c >= 2))}
    data = Data(rows, vocab)
    pos = y.mean()
    sample_w = np.where(y == 1, 0.5 / pos, 0.5 / (1 - pos)) / len(y)
    w, b = np.zeros(len(vocab)), 0.0
    m, v, mb, vb = np.zeros_like(w), np.zeros_like(w), 0.0, 0.0
    lr, beta1, beta2 = 0.05, 0.9, 0.999
    for t in range(1, STEPS + 1):
        p = 1 / (1 + np.exp(-(data.dot(w) + b)))
        r = (p - y) * sample_w
        gw, gb = data.tdot(r) + L2 * w, float(r.sum())
        m, v = beta1 * m + (1 - beta1) * gw, beta2 * v + (1 - beta2) * gw * gw
        mb, vb = beta1 * mb + (1 - beta1) * gb, beta2 * vb + (1 - beta2) * gb * gb
        corr = np.sqrt(1 - beta2**t) / (1 - beta1**t)
        w -= lr * corr * m / (np.sqrt(v) + 1e-8)
        b -= lr * corr * mb / (np.sqrt(vb) + 1e-8)
    names = list(vocab)
    return {names[i]: float(w[i]) for i in range(len(names))}, b


def score(weights: dict[str, float], bias: float, feats: set[str]) -> float:
    total = sum(weights.get(f, 0.0) for f in feats)
    z = bias + total * scale(feats)
    return float(1 / (1 + np.exp(-z)))


def prob(weights: dict[str, float], bias: float, text: str) -> float:
    return max(score(weights, bias, w) for w in windows(text))


def examples(records: list[dict[str, Any]]) -> tuple[list[set[str]], np.ndarray]:
    """Windows and labels; a long injected text gives its most injection-like window."""
    cut = {id(r): windows(r["text"]) for r in records}
    short = [r for r in records if r["label"] == 0 or len(cut[id(r)]) == 1]
    rows = [w for r in short for w in cut[id(r)]]
    labels = [r["label"] for r in short for _ in cut[id(r)]]
    first_w, first_b = fit(rows, np.array(labels, dtype=np.float64))
    for r in records:
        if r["label"] == 1 and len(cut[id(r)]) > 1:
            cands = cut[id(r)]
            rows.append(max(cands, key=lambda f: score(first_w, first_b, f)))
            labels.append(1)
    return rows, np.array(labels, dtype=np.float64)


def threshold(records: list[dict[str, Any]]) -> float:
    """The lowest threshold keeping the calibration texts' FPR <= TARGET_FPR."""
    calib = [r for r in records if bucket(r["text"]) < 0.2]
    rest = [r for r in records if bucket(r["text"]) >= 0.2]
    rows, y = examples(rest)
    w, b = fit(rows, y)
    benign = sorted(prob(w, b, r["text"]) for r in calib if r["label"] == 0)
    attacks = [prob(w, b, r["text"]) for r in calib if r["label"] == 1]
    cut = benign[min(len(benign) - 1, int(np.ceil(len(benign) * (1 - TARGET_FPR))))]
    t = min(0.9, max(0.5, round(cut + 1e-3, 3)))
    caught = sum(p >= t for p in attacks) / max(1, len(attacks))
    print(f"calibration: {len(calib)} texts, threshold {t}, detection {caught:.3f}")
    return t


def main() -> None:
    np.random.seed(SEED)
    records = load("train")
    t = threshold(records)
    rows, y = examples(records)
    weights, bias = fit(rows, y)
    kept = {f: round(w, 4) for f, w in sorted(weights.items()) if abs(w) >= KEEP}
    digest = hashlib.sha256(DATASET.read_bytes()).hexdigest()[:16]
    model = {
        "bias": round(bias, 6),
        "threshold": t,
        "weights": kept,
        "about": {
            "trained_by": "benchmarks/screen_train.py",
            "dataset": f"benchmarks/screen_data/dataset.jsonl.gz sha256:{digest}",
            "train_texts": len(records),
            "windows": len(rows),
            "features": len(kept),
            "seed": SEED,
        },
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    raw = json.dumps(model, sort_keys=True, separators=(",", ":")).encode()
    OUT.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    print(f"wrote {OUT.relative_to(REPO)}: {len(kept)} features, {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
