"""Summarize several runs of the suite as a Markdown table for the README.

    python benchmarks/summarize.py FILE [FILE ...] [--conditions TEXT]

Each FILE holds ``run.py --json`` output (one JSON object per line, any number
of runs). Per workload the table gives, across runs, the median and the
min-max range of Mainspring's value, the anchor's and the ratio, and how many
runs met the target. The line under the table states the conditions: the
``--conditions`` text, or Python, cores and load average read here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from report import environment, fmt

COLUMNS = (("mainspring", ""), ("anchor", ""), ("ratio", "x"))


def read_lines(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """The workload objects in the files; other lines (progress, tables) are skipped."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        for line in path.read_text().splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                if isinstance(row, dict) and "workload" in row:
                    rows.append(row)
    return rows


def summarize(rows: Iterable[dict[str, Any]], conditions: str | None = None) -> str:
    """A Markdown table: per workload, median (min-max) across runs, then the conditions."""
    by_workload: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_workload.setdefault(row["workload"], []).append(row)
    lines = [
        "| workload | unit | Mainspring | anchor | ratio | target | met | runs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for workload, runs in by_workload.items():
        cells = [_cell([r.get(key) for r in runs], suffix) for key, suffix in COLUMNS]
        verdicts = [r.get("met") for r in runs if r.get("met") is not None]
        met = f"{sum(bool(v) for v in verdicts)}/{len(verdicts)}" if verdicts else "-"
        target = str(runs[-1].get("target") or "-").replace("|", "\\|")
        unit = runs[-1].get("unit", "-")
        lines.append(
            f"| {workload} | {unit} | {' | '.join(cells)} | {target} | {met} | {len(runs)} |"
        )
    lines.append("")
    lines.append(
        f"Median (min-max) across runs; ratio > 1: Mainspring better. {conditions or environment()}"
    )
    return "\n".join(lines)


def _cell(values: list[Any], suffix: str) -> str:
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if not numbers:
        return "-"
    median = fmt(statistics.median(numbers), suffix)
    if len(numbers) == 1:
        return median
    return f"{median} ({fmt(min(numbers))}-{fmt(max(numbers), suffix)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="+", type=Path, help="run.py --json output")
    parser.add_argument("--conditions", help="the conditions line (default: read here)")
    args = parser.parse_args(argv)
    rows = read_lines(args.files)
    if not rows:
        print("no workload lines in the given files", file=sys.stderr)
        return 1
    print(summarize(rows, args.conditions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
