"""From journals to spans: one state machine, fed live by the tracer or all at once by the CLI.

:func:`derive_spans` is the pure form: events in, span records out. The live
tracer feeds the same :class:`SpanBuilder` event by event and exports each span
as it closes, so what is traced live is what the journal says, exactly.

Spans (ids: :mod:`mainspring.telemetry.ids`):

* run (``invoke_workflow <graph>``, or ``invoke_agent <agent>`` for a run started
  with ``metadata={"agent": ...}``): ``run_started`` to ``finished`` / ``failed`` /
  ``cancelled``; a subgraph run's parent is the parent task's attempt span;
* node attempt (``node <node>``): ``step_started`` to ``step_finished`` /
  ``step_failed`` / ``interrupted``; each retry and each rerun after a resume is
  a span of its own under the run span. A workflow step is not a GenAI operation,
  so it carries no ``gen_ai.operation.name``: a node that runs an agent is a
  subgraph node, and the agent is its child run's ``invoke_agent`` span;
* effect (``execute_tool <tool>``, ``chat <model>`` or the effect's name):
  ``effect_started`` to ``effect_finished``, under its attempt;
* interrupt wait (``interrupt <node>``): ``interrupted`` to ``resumed``, under the
  run span, linked to the attempt that asked.

A span whose process stopped before it closed (a crash) is closed as
*abandoned* when the journal shows the work starting again.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from ..events import Event
from .builder import SpanBuilder
from .conventions import Capture
from .records import SpanEvent, SpanKind, SpanRecord

__all__ = ["SpanBuilder", "SpanEvent", "SpanKind", "SpanRecord", "derive_spans", "in_causal_order"]


def in_causal_order(events: Iterable[Event]) -> list[Event]:
    """Events of several runs (a run and its subgraph runs) merged by time, each run in seq order."""
    by_run: dict[str, list[Event]] = {}
    for event in events:
        by_run.setdefault(event.run_id, []).append(event)
    lists = [sorted(evs, key=lambda e: e.seq) for evs in by_run.values()]
    lists.sort(key=lambda evs: (evs[0].ts, evs[0].run_id.count("/"), evs[0].run_id))
    return list(heapq.merge(*lists, key=lambda e: e.ts))


def derive_spans(events: Iterable[Event], capture: Capture | None = None) -> list[SpanRecord]:
    """Every span of the given journals, closed ones and those still open (``end_ns`` None)."""
    builder = SpanBuilder(capture, max_runs=1 << 30)
    spans: list[SpanRecord] = []
    for event in in_causal_order(events):
        spans.extend(builder.feed(event))
    spans.extend(builder.open_spans())
    spans.sort(key=lambda s: (s.start_ns, s.kind != "run", s.span_id))
    return spans
