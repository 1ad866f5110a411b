"""Printing results: one JSON object per line, or a table for people."""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib.metadata import version
from typing import Any

from rich.console import Console
from rich.table import Table

from harness import Result

_TABLE_EXTRAS = ("floor", "vs_floor")


def print_json(result: Result) -> None:
    print(json.dumps(result.to_json()), flush=True)


def print_table(results: list[Result], *, title: str, context: str) -> None:
    table = Table(title=title, title_justify="left")
    for column in (
        "workload",
        "Mainspring",
        "anchor",
        "unit",
        "ratio",
        "floor",
        "vs floor",
        "target",
        "met",
    ):
        table.add_column(
            column, justify="left" if column in ("workload", "unit", "target") else "right"
        )
    for r in results:
        if r.skipped is not None:
            table.add_row(r.workload, "-", "-", r.unit, "-", "-", "-", f"skipped: {r.skipped}", "-")
            continue
        table.add_row(
            r.workload,
            fmt(r.mainspring),
            fmt(r.anchor),
            r.unit,
            fmt(r.ratio, "x"),
            fmt(r.extra.get("floor")),
            fmt(r.extra.get("vs_floor"), "x"),
            _target(r),
            {True: "[green]yes[/]", False: "[red]NO[/]", None: "-"}[r.met],
        )
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160)
    console.print(table)
    console.print(context)
    console.print(
        "ratio = Mainspring's advantage over the anchor (> 1: better). Times are each side's best "
        "round (W8: the median of fresh processes); ratio and vs floor are medians of per-round "
        "ratios where sampled in the same rounds."
    )
    for r in results:
        details = {k: v for k, v in r.extra.items() if k not in _TABLE_EXTRAS}
        if details:
            console.print(
                f"[bold]{r.workload}[/]: " + ", ".join(f"{k}={fmt(v)}" for k, v in details.items())
            )


def _target(result: Result) -> str:
    """Each part of the target with its own verdict, e.g. ``<= 10 us/step ok; >= 15x faster MISSED``."""
    return "; ".join(f"{c.label} {'ok' if c.ok else 'MISSED'}" for c in result.checks) or "-"


def fmt(value: Any, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if value >= 10_000:
        return f"{value:,.0f}{suffix}"
    return f"{value:.3g}{suffix}" if value < 100 else f"{value:.0f}{suffix}"


def environment() -> str:
    """Versions, cores and how busy the machine was: context for the numbers."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"Python {platform.python_version()}, mainspring {version('mainspring')}, "
        f"langgraph {version('langgraph')}, {os.cpu_count()} cores, load average {load}"
    )
