"""A run's trace in the terminal, without any backend: a waterfall of the spans of its journal.

Rows are spans nested under their parents, bars are drawn to scale on one
time axis (parallel branches overlap side by side), ``●`` marks the critical
path, errors are red, waits are yellow, retries and reruns are labelled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .ids import hex_trace
from .spans.record import SpanRecord

_ICONS: Final = {"run": "▣", "node": "◆", "effect": "↯", "wait": "⏸"}


@dataclass(frozen=True, slots=True)
class Row:
    span: SpanRecord
    depth: int
    start_ns: int
    end_ns: int  # open spans end where the journal ends
    critical: bool
    parallel: bool  # overlaps a sibling in time

    @property
    def open(self) -> bool:
        return self.span.end_ns is None


def fmt_duration(ns: int) -> str:
    s = ns / 1e9
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    if s < 60:
        return f"{s:.2f} s"
    minutes, seconds = divmod(int(s), 60)
    return f"{minutes}m {seconds:02d}s" if minutes < 60 else f"{minutes // 60}h {minutes % 60:02d}m"


def critical_path(spans: Sequence[SpanRecord], horizon: int) -> set[int]:
    """Span ids on the critical path: from each root's end, back through the child that ended last."""
    children: dict[int, list[SpanRecord]] = {}
    known = {s.span_id for s in spans}
    for s in spans:
        if s.parent_id is not None and s.parent_id in known:
            children.setdefault(s.parent_id, []).append(s)
    on_path: set[int] = set()

    def end(s: SpanRecord) -> int:
        return s.end_ns if s.end_ns is not None else horizon

    def walk(span: SpanRecord) -> None:
        on_path.add(span.span_id)
        cursor = end(span)
        kids = sorted(children.get(span.span_id, []), key=end, reverse=True)
        for kid in kids:
            if end(kid) <= cursor and kid.span_id not in on_path:
                walk(kid)
                cursor = kid.start_ns

    for root in [s for s in spans if s.parent_id is None or s.parent_id not in known]:
        walk(root)
    return on_path


def layout(spans: Sequence[SpanRecord]) -> list[Row]:
    """The rows of the waterfall: depth-first, children by start time."""
    if not spans:
        return []
    horizon = max(max(s.end_ns or s.start_ns for s in spans), max(s.start_ns for s in spans))
    critical = critical_path(spans, horizon)
    known = {s.span_id for s in spans}
    children: dict[int | None, list[SpanRecord]] = {}
    for s in spans:
        parent = s.parent_id if s.parent_id in known else None
        children.setdefault(parent, []).append(s)
    rows: list[Row] = []

    def visit(span: SpanRecord, depth: int, siblings: list[SpanRecord]) -> None:
        end = span.end_ns if span.end_ns is not None else horizon
        parallel = span.kind == "node" and any(
            o is not span
            and o.kind == "node"
            and o.start_ns < end
            and span.start_ns < (o.end_ns or horizon)
            for o in siblings
        )
        rows.append(Row(span, depth, span.start_ns, end, span.span_id in critical, parallel))
        kids = sorted(children.get(span.span_id, []), key=lambda s: (s.start_ns, s.span_id))
        for kid in kids:
            visit(kid, depth + 1, kids)

    roots = sorted(children.get(None, []), key=lambda s: (s.start_ns, s.span_id))
    for root in roots:
        visit(root, 0, roots)
    return rows


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def _note(span: SpanRecord, is_open: bool) -> Text:
    a = span.attributes
    parts: list[tuple[str, str]] = []
    if span.kind == "node":
        attempt = a.get("mainspring.attempt", 1)
        if isinstance(attempt, int) and attempt > 1:
            parts.append((f"attempt {attempt}", "yellow"))
        if a.get("mainspring.rerun"):
            parts.append(("rerun", "cyan"))
        outcome = a.get("mainspring.outcome")
        if outcome == "retrying":
            parts.append((f"retry in {_number(a.get('mainspring.retry.delay_s')):.2f} s", "yellow"))
        elif outcome in ("interrupted", "abandoned", "cancelled"):
            parts.append((str(outcome), "yellow"))
    elif span.kind == "effect":
        if "gen_ai.usage.input_tokens" in a:
            parts.append(
                (
                    f"{a['gen_ai.usage.input_tokens']}→{a.get('gen_ai.usage.output_tokens', 0)} tok",
                    "green",
                )
            )
        if "mainspring.cost_usd" in a:
            parts.append((f"${_number(a['mainspring.cost_usd']):.4f}", "green"))
    elif span.kind == "wait":
        parts.append(
            (
                "waiting" if is_open else f"interrupt {a.get('mainspring.interrupt.id', '')}",
                "yellow",
            )
        )
    elif is_open:
        parts.append(("in progress", "cyan"))
    if span.status == "error":
        parts.append((span.status_message[:80], "red"))
    text = Text()
    for i, (label, style) in enumerate(parts):
        if i:
            text.append(" · ", style="dim")
        text.append(label, style=style)
    return text


def _bar(row: Row, t0: int, t1: int, width: int) -> Text:
    scale = width / max(1, t1 - t0)
    left = min(width - 1, int((row.start_ns - t0) * scale))
    right = max(left + 1, min(width, math.ceil((row.end_ns - t0) * scale)))
    span = row.span
    if span.status == "error":
        style = "red"
    elif span.kind == "wait":
        style = "yellow"
    elif span.kind == "effect":
        style = "green"
    elif span.kind == "run":
        style = "blue"
    else:
        style = "cyan"
    if row.critical:
        style = f"bold {style}"
    glyph = "░" if span.kind == "wait" else "█"
    text = Text(" " * left)
    text.append(glyph * (right - left), style=style)
    if row.open and right < width:
        text.append("…", style="dim")
    return text


def render(spans: Sequence[SpanRecord], *, width: int = 120) -> RenderableType:
    """The waterfall as a rich renderable (``Console().print(render(spans))``)."""
    rows = layout(spans)
    if not rows:
        return Text("no spans: the run has no events", style="dim")
    t0 = min(r.start_ns for r in rows)
    t1 = max(r.end_ns for r in rows)
    label_width = min(48, max(len(r.span.name) + 2 * r.depth + 4 for r in rows))
    note_width = max(12, min(40, width // 4))
    bar_width = max(
        20, width - label_width - note_width - 9 - 1 - 8
    )  # 9: duration, 1: marker, 8: padding
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False, expand=False)
    table.add_column("", width=1, no_wrap=True)
    table.add_column("span", width=label_width, no_wrap=True, overflow="ellipsis")
    table.add_column("duration", width=9, justify="right", no_wrap=True)
    table.add_column(f"0 → {fmt_duration(t1 - t0)}", width=bar_width, no_wrap=True, overflow="crop")
    table.add_column("", width=note_width, no_wrap=True, overflow="ellipsis")
    for row in rows:
        span = row.span
        label = Text("  " * row.depth)
        if row.parallel:
            label.append("‖ ", style="magenta")
        label.append(f"{_ICONS[span.kind]} ", style="dim")
        label.append(
            span.name, style="red" if span.status == "error" else ("bold" if row.critical else "")
        )
        duration = fmt_duration(row.end_ns - row.start_ns) + ("+" if row.open else "")
        table.add_row(
            Text("●", style="magenta") if row.critical else Text(" "),
            label,
            Text(duration, style="red" if span.status == "error" else ""),
            _bar(row, t0, t1, bar_width),
            _note(span, row.open),
        )
    root = rows[0].span
    title = Text.assemble(
        ("trace ", "bold"),
        (hex_trace(root.trace_id), "dim"),
        ("  run ", "bold"),
        (root.run_id, ""),
        ("  ● critical path  ‖ parallel  ░ waiting", "dim"),
    )
    return Group(title, table)


def to_json(spans: Sequence[SpanRecord]) -> dict[str, Any]:
    """The waterfall as JSON: the spans in row order, each with its depth and critical-path flag."""
    rows = layout(spans)
    root = rows[0].span if rows else None
    return {
        "run_id": root.run_id if root else None,
        "trace_id": hex_trace(root.trace_id) if root else None,
        "spans": [
            {**r.span.to_json(), "depth": r.depth, "critical": r.critical, "parallel": r.parallel}
            for r in rows
        ],
    }
