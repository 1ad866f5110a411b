"""How journal events and values look on a terminal: summaries, live progress, timelines."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson
from rich.console import Console
from rich.json import JSON
from rich.text import Text

from ..errors import MainspringError
from ..events import (
    TASK_DATA,
    UNSET,
    Cancelled,
    Discarded,
    EffectFinished,
    EffectStarted,
    Emitted,
    ErrorInfo,
    Event,
    EventKind,
    Failed,
    Interrupted,
    Resumed,
    RunStarted,
    StepFailed,
    StepFinished,
    StepStarted,
    to_jsonable,
)
from ..status import RunStatus

STATUS_STYLE: Final = {
    RunStatus.RUNNING: "cyan",
    RunStatus.INTERRUPTED: "yellow",
    RunStatus.FINISHED: "green",
    RunStatus.FAILED: "red",
    RunStatus.CANCELLED: "magenta",
}

# icon and style of each event kind in live progress and timelines
_LOOK: Final = {
    EventKind.RUN_STARTED: ("▶", "bold cyan"),
    EventKind.STEP_STARTED: ("●", "cyan"),
    EventKind.STEP_FINISHED: ("✓", "green"),
    EventKind.STEP_FAILED: ("✗", "red"),
    EventKind.EFFECT_STARTED: ("↳", "blue"),
    EventKind.EFFECT_FINISHED: ("↳", "blue"),
    EventKind.INTERRUPTED: ("⏸", "bold yellow"),
    EventKind.RESUMED: ("▶", "bold cyan"),
    EventKind.EMITTED: ("✦", "magenta"),
    EventKind.DISCARDED: ("⌛", "yellow"),
    EventKind.FAILED: ("✗", "bold red"),
    EventKind.FINISHED: ("■", "bold green"),
    EventKind.CANCELLED: ("■", "bold magenta"),
}


# -- values ------------------------------------------------------------------------


def compact(value: Any, limit: int = 60) -> str:
    """One-line JSON of ``value``, cut to ``limit`` characters."""
    try:
        text = orjson.dumps(to_jsonable(value)).decode()
    except MainspringError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def jsonable(value: Any) -> Any:
    return to_jsonable(value, what="the output")


def print_json(console: Console, value: Any) -> None:
    """Pretty JSON: highlighted on a terminal, plain when piped; never hard-wrapped."""
    console.print(JSON.from_data(jsonable(value), ensure_ascii=False), soft_wrap=True)


def fmt_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def fmt_age(ts: float, now: float | None = None) -> str:
    secs = max(0.0, (time.time() if now is None else now) - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{int(secs // size)}{unit} ago"
    return f"{int(secs)}s ago"


def status_text(status: RunStatus, suffix: str = "") -> Text:
    return Text(status.value + suffix, style=STATUS_STYLE[status])


# -- events ------------------------------------------------------------------------


def _updates(update: Any, limit: int) -> str:
    if update is None or update == {}:
        return "no update"
    if not isinstance(update, Mapping):
        return compact(update, limit)
    text = ", ".join(f"{k}={compact(v, 40)}" for k, v in update.items())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_text(error: ErrorInfo | Mapping[str, Any] | None) -> str:
    """``type: message`` of an error: as events record it, or as a dict (``RunOutcome.error``)."""
    if isinstance(error, ErrorInfo):
        return error.summary
    if not isinstance(error, Mapping):
        return compact(error)
    return f"{error.get('type')}: {error.get('message')}"


def _result(value: Any) -> Any:
    return None if value is UNSET else value


def summarize(e: Event, limit: int = 100) -> str:
    """A compact, human summary of an event's data."""
    d = e.data
    if isinstance(d, RunStarted):
        parts = [f"graph {d.graph}"]
        if d.thread is not None:
            parts.append(f"thread {d.thread}")
        if (forked := d.forked_from) is not None:
            parts.append(f"forked from {forked.run_id} at seq {forked.seq}")
        if (parent := d.parent) is not None:
            parts.append(f"subgraph of run {parent.run_id} (node {parent.node})")
        parts.append(f"input {compact(d.input, limit // 2)}")
        return ", ".join(parts)
    if isinstance(d, StepStarted):
        bits = [f"step {d.step} started"]
        if d.attempt > 1:
            bits.append(f"attempt {d.attempt}")
        if d.rerun:
            bits.append("rerun")
        if d.arg is not UNSET:
            bits.append(f"arg {compact(d.arg, limit // 2)}")
        return ", ".join(bits)
    if isinstance(d, StepFinished):
        return _updates(d.update, limit)
    if isinstance(d, StepFailed):
        then = f"retry in {d.delay:.2f}s" if d.retry else "no retry"
        return f"attempt {d.attempt}: {error_text(d.error)}; {then}"
    if isinstance(d, EffectStarted):
        attempt = f" (attempt {d.attempt})" if d.attempt > 1 else ""
        return f"effect {d.name} …{attempt}"
    if isinstance(d, EffectFinished):
        if d.error is not None:
            return f"effect {d.name} ✗ {error_text(d.error)}"
        return f"effect {d.name} → {compact(_result(d.result), limit)}"
    if isinstance(d, Interrupted):
        child = f" (from subgraph run {d.child_run})" if d.child_run else ""
        return f"interrupt {d.id}: {compact(d.payload, limit)}{child}"
    if isinstance(d, Resumed):
        return ", ".join(f"{iid} ← {compact(v, 40)}" for iid, v in d.values.items()) or "resumed"
    if isinstance(d, Emitted):
        return compact(d.data, limit)
    if isinstance(d, Discarded):
        what = f"effect {d.name}" if d.effect is not None else "node"
        got = error_text(d.error) if d.error is not None else compact(_result(d.result), limit)
        return f"{what} finished {d.seconds:.1f}s late, discarded: {got}"
    if isinstance(d, Failed):
        node = d.error.node
        return error_text(d.error) + (f" (node {node})" if node else "")
    if isinstance(d, Cancelled):
        return d.reason
    return ""


# The kinds of event that belong to one task of a step (and so name its node).


def _where(e: Event) -> tuple[str, str]:
    d = e.data
    if not isinstance(d, TASK_DATA):
        return "", ""
    return f"{d.step}.{d.task}", d.node


def _label(e: Event) -> str:
    if e.kind is EventKind.RUN_STARTED:
        return "run started"
    if e.kind in (EventKind.RESUMED, EventKind.FINISHED, EventKind.FAILED, EventKind.CANCELLED):
        return e.kind.value
    return _where(e)[1]


class Progress:
    """Prints a run's events as they happen, one line each."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.base: float | None = None

    def show(self, e: Event) -> None:
        self.base = e.ts if self.base is None else self.base
        icon, style = _LOOK.get(e.kind, ("·", ""))
        detail = summarize(e)
        if e.kind is EventKind.EMITTED:
            detail = f"emitted {detail}"
        elif e.kind is EventKind.RUN_STARTED:
            detail = f"{e.run_id}: {detail}"
        if isinstance(e.data, EffectFinished) and e.data.error is not None:
            style = "red"
        line = Text.assemble(
            (f"{e.ts - self.base:8.3f}s ", "dim"),
            (f"{icon} ", style),
            (f"{_label(e):<14} ", "bold"),
            (detail, style if e.kind in (EventKind.FAILED, EventKind.STEP_FAILED) else ""),
        )
        line.rstrip()
        self.console.print(line, soft_wrap=True)


def timeline_rows(events: Iterable[Event]) -> list[list[Text]]:
    """The journal as rows: seq, time since start, kind, step.task, node, summary."""
    rows = [[Text(h, "bold") for h in ("seq", "time", "kind", "step", "node", "summary")]]
    base: float | None = None
    for e in events:
        base = e.ts if base is None else base
        step, node = _where(e)
        style = _LOOK.get(e.kind, ("", ""))[1]
        rows.append(
            [
                Text(str(e.seq), "dim"),
                Text(f"+{e.ts - base:.3f}s", "dim"),
                Text(e.kind.value, style),
                Text(step),
                Text(node),
                Text(summarize(e)),
            ]
        )
    return rows


def print_rows(console: Console, rows: list[list[Text]], *, right: Iterable[int] = ()) -> None:
    """Print rows as aligned columns; the last column is never padded or cut."""
    if not rows:
        return
    widths = [max(row[i].cell_len for row in rows) for i in range(len(rows[0]))]
    aligned_right, last = set(right), len(widths) - 1
    for row in rows:
        line = Text()
        for i, cell in enumerate(row):
            pad = Text(" " * (widths[i] - cell.cell_len))
            if i in aligned_right:
                line.append_text(pad + cell)
            else:
                line.append_text(cell if i == last else cell + pad)
            if i != last:
                line.append("  ")
        line.rstrip()
        console.print(line, soft_wrap=True)
