"""Detection and false-positive rates of the screen on the held-out test split.

    python benchmarks/screen_eval.py [--json] [--split test]

Reads benchmarks/screen_data/dataset.jsonl.gz (the split the training never read: whole
sources and template families, see SOURCES.md) and scores each text with the shipped
screen three ways: heuristics alone, the classifier alone, and both (what ``Screen``
flags: either). Prints the rates per source and overall.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mainspring.guard.screen import Rule, Screener  # noqa: E402

DATASET = REPO / "benchmarks" / "screen_data" / "dataset.jsonl.gz"
MODES = {
    "heuristics": Rule(classifier=False),
    "classifier": Rule(heuristics=()),
    "screen": Rule(),
}


def load(split: str) -> list[dict[str, Any]]:
    with gzip.open(DATASET, "rt", encoding="utf-8") as f:
        return [r for r in map(json.loads, f) if r["split"] == split]


def evaluate(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per mode: detection (injections flagged), FPR (benign flagged), per source."""
    out: dict[str, dict[str, Any]] = {}
    for mode, rule in MODES.items():
        screener = Screener({"*": rule})
        rows: dict[tuple[str, int], list[int]] = {}
        for r in records:
            flagged = screener.screen_text(r["text"], "eval").flagged
            rows.setdefault((r["source"], r["label"]), [0, 0])
            rows[(r["source"], r["label"])][0] += 1
            rows[(r["source"], r["label"])][1] += int(flagged)
        inj = [v for (_, label), v in rows.items() if label == 1]
        ben = [v for (_, label), v in rows.items() if label == 0]
        out[mode] = {
            "detection": sum(v[1] for v in inj) / max(1, sum(v[0] for v in inj)),
            "fpr": sum(v[1] for v in ben) / max(1, sum(v[0] for v in ben)),
            "injections": sum(v[0] for v in inj),
            "benign": sum(v[0] for v in ben),
            "by_source": {
                f"{s}/{'inj' if lab else 'benign'}": v for (s, lab), v in sorted(rows.items())
            },
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--split", default="test")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = evaluate(load(args.split))
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for mode, r in result.items():
        print(
            f"{mode:11} detection {r['detection']:.3f} ({r['injections']} injections)  "
            f"false positives {r['fpr']:.4f} ({r['benign']} benign)"
        )
    print("\nby source (texts, flagged by the screen):")
    for key, (n, flagged) in result["screen"]["by_source"].items():
        print(f"  {key:36} {n:5} {flagged:5}  {flagged / n:.3f}")


if __name__ == "__main__":
    main()
