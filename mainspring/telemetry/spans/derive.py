"""Journal events to span records: a state machine that closes spans as the journal closes them.

:class:`SpanBuilder` is fed live by the tracer and the logger (one event at a time, on
their threads); :func:`derive_spans` feeds it whole journals for the CLI. The spans
it derives are listed in :mod:`mainspring.telemetry.spans`.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ...events import (
    UNSET,
    Cancelled,
    EffectFinished,
    EffectStarted,
    Emitted,
    Event,
    EventData,
    EventKind,
    Failed,
    Interrupted,
    Resumed,
    RunStarted,
    StepFailed,
    StepFinished,
    StepStarted,
)
from ..conventions import AttrValue, Capture, effect_kind, usage_of
from ..ids import (
    abandoned_effect_span_id,
    attempt_span_id,
    effect_span_id,
    guess_root,
    run_span_id,
    trace_id,
    trace_of,
    wait_span_id,
)
from .genai import name_effect, output_messages, set_error, set_reply, set_usage
from .record import SpanEvent, SpanRecord, ns


class _Task:
    __slots__ = ("attempts", "last_ns", "open")

    def __init__(self) -> None:
        self.attempts: list[tuple[int, int]] = []  # (start ns, span id) of each attempt this step
        self.open: SpanRecord | None = None
        self.last_ns = 0


class _Run:
    __slots__ = ("effects", "seq", "span", "step", "tasks", "thread", "waits")

    def __init__(self, span: SpanRecord, thread: str | None) -> None:
        self.span = span
        self.thread = thread
        self.seq = 0
        self.step = -1
        self.tasks: dict[int, _Task] = {}
        self.effects: dict[tuple[int, int], SpanRecord] = {}  # open, by (task, effect index)
        self.waits: dict[str, SpanRecord] = {}  # open, by interrupt id

    def attempt_at(self, step: int, task: int, ts_ns: int) -> int:
        """The attempt of ``(step, task)`` running at ``ts_ns``: a subgraph run's parent span."""
        record = self.tasks.get(task) if step == self.step else None
        if record is not None:
            for start, span_id in reversed(record.attempts):
                if start <= ts_ns:
                    return span_id
        return self.span.span_id


class SpanBuilder:
    """Turns events into spans; ``feed`` returns the spans each event closed.

    ``replay=True`` feeds history that another process already traced: state is
    rebuilt, closed spans are not returned. At most ``max_runs`` runs are held
    (the oldest dropped first; their open spans are rebuilt from the journal if
    they come back). Written for speed: it runs for every event of every run.
    """

    def __init__(self, capture: Capture | None = None, *, max_runs: int = 10_000) -> None:
        self.capture = capture or Capture()
        self.max_runs = max_runs
        self.runs: dict[str, _Run] = {}
        self._current: SpanRecord | None = None
        self._closed: list[SpanRecord] = []

    @property
    def current(self) -> tuple[int, int] | None:
        """(trace id, span id) of the span the last event fed belongs to."""
        span = self._current
        return None if span is None else (span.trace_id, span.span_id)

    # -- feeding -------------------------------------------------------------------

    def feed(self, event: Event, *, replay: bool = False) -> Sequence[SpanRecord]:
        kind, data = event.kind, event.data
        run = self.runs.get(event.run_id)
        if kind is EventKind.RUN_STARTED:
            assert isinstance(data, RunStarted)
            run = self._start(event, data)
        elif run is None:
            run = self._adopt(event)
        run.seq = event.seq
        self._current = run.span
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, run, event, data)
        closed = self._closed
        if not closed:
            return ()
        self._closed = []
        return () if replay else closed

    def open_spans(self) -> list[SpanRecord]:
        out: list[SpanRecord] = []
        for run in self.runs.values():
            run.span.attributes["mainspring.seq.end"] = run.seq
            out.append(run.span)
            out.extend(t.open for t in run.tasks.values() if t.open is not None)
            out.extend(run.effects.values())
            out.extend(run.waits.values())
        return out

    def _register(self, run_id: str, run: _Run) -> _Run:
        runs = self.runs
        runs.pop(run_id, None)
        runs[run_id] = run
        if len(runs) > self.max_runs:
            del runs[next(iter(runs))]
        return run

    def _start(self, event: Event, data: RunStarted) -> _Run:
        run_id, start = event.run_id, ns(event.ts)
        parent = data.parent
        metadata = data.metadata or {}
        parent_id: int | None = None
        if parent is not None:
            known = self.runs.get(parent.run_id)
            if known is not None:
                trace = known.span.trace_id
                parent_id = known.attempt_at(parent.step, parent.task, start)
            else:
                trace = trace_of(run_id, data)
                parent_id = run_span_id(parent.run_id)
        else:
            trace = trace_of(run_id, data)
        graph = data.graph
        agent = metadata.get("agent")
        op = "invoke_agent" if isinstance(agent, str) else "invoke_workflow"
        attrs: dict[str, AttrValue] = {
            "gen_ai.operation.name": op,
            "gen_ai.workflow.name": graph,
            "mainspring.run_id": run_id,
            "mainspring.graph": graph,
            "mainspring.seq": event.seq,
            "mainspring.durability": data.durability,
        }
        if isinstance(agent, str):
            attrs["gen_ai.agent.name"] = agent
        thread = data.thread
        if thread is not None:
            attrs["gen_ai.conversation.id"] = thread
        tenant = metadata.get("tenant")
        if isinstance(tenant, str):
            attrs["mainspring.tenant"] = tenant
        if parent is not None:
            attrs["mainspring.parent_run_id"] = parent.run_id
        span = SpanRecord(
            f"{op} {agent if isinstance(agent, str) else graph}",
            "run",
            run_id,
            trace,
            run_span_id(run_id),
            parent_id,
            start,
            attributes=attrs,
        )
        forked = data.forked_from
        if forked is not None:
            attrs["mainspring.forked_from.run_id"] = forked.run_id
            attrs["mainspring.forked_from.seq"] = forked.seq
            # A fork of a subgraph run stays in its root's trace; a top-level source had its own.
            source_trace = trace if parent is not None else trace_id(forked.run_id, forked.nonce)
            span.add_link(source_trace, run_span_id(forked.run_id))
        self._put(attrs, "mainspring.input", data.input)
        return self._register(run_id, _Run(span, thread))

    def _adopt(self, event: Event) -> _Run:
        """A run whose start this builder never saw and cannot read: trace it from here on."""
        run_id = event.run_id
        parent = max((r for r in self.runs if run_id.startswith(r + "/")), key=len, default=None)
        parent_id: int | None
        if parent is not None:
            trace, parent_id = self.runs[parent].span.trace_id, self.runs[parent].span.span_id
        else:
            root = guess_root(run_id)
            trace = trace_id(root)
            parent_id = None if root == run_id else run_span_id(run_id.rsplit("/", 1)[0])
        attrs: dict[str, AttrValue] = {
            "gen_ai.operation.name": "invoke_workflow",
            "mainspring.run_id": run_id,
            "mainspring.seq": event.seq,
            "mainspring.partial": True,  # the journal before this point was not read
        }
        span = SpanRecord(
            "invoke_workflow",
            "run",
            run_id,
            trace,
            run_span_id(run_id),
            parent_id,
            ns(event.ts),
            attributes=attrs,
        )
        return self._register(run_id, _Run(span, None))

    # -- closing -------------------------------------------------------------------

    def _put(self, attrs: dict[str, AttrValue], key: str, value: Any) -> None:
        if self.capture.enabled:
            text = self.capture.text(key, value)
            if text is not None:
                attrs[key] = text

    def _close(self, span: SpanRecord, end_ns: int) -> None:
        span.end_ns = max(end_ns, span.start_ns)
        self._closed.append(span)

    def _abandon(self, span: SpanRecord, end_ns: int, outcome: str = "abandoned") -> None:
        """Close a span the journal never closed: ``abandoned`` (its process stopped) or ``cancelled``."""
        span.attributes["mainspring.outcome"] = outcome
        if outcome == "abandoned":
            span.status = "error"
            span.status_message = (
                "abandoned: the process driving it stopped; the run went on from its journal"
            )
            key = span.attributes.get("mainspring.effect.key")
            seq = span.attributes.get("mainspring.seq")
            if span.kind == "effect" and isinstance(key, str) and isinstance(seq, int):
                # The key's own id goes to the rerun with the same key (abandoned_effect_span_id).
                span.span_id = abandoned_effect_span_id(span.run_id, key, seq)
        self._close(span, end_ns)

    def _end_attempt(self, run: _Run, index: int, end_ns: int, outcome: str | None = None) -> None:
        """Close what is left open of task ``index``'s attempt (effects first)."""
        if (
            run.effects
        ):  # effects still open when their attempt ended were cancelled with it (a timeout)
            for key in [k for k in run.effects if k[0] == index]:
                self._abandon(run.effects.pop(key), end_ns, outcome or "cancelled")
        task = run.tasks.get(index)
        if task is not None and task.open is not None:
            span, task.open = task.open, None
            if outcome is None:
                self._close(span, end_ns)
            else:
                self._abandon(span, end_ns, outcome)

    def _end_run(self, run: _Run, event: Event, outcome: str) -> None:
        end = ns(event.ts)
        for index in list(run.tasks):  # siblings of a failed task are cancelled with the run
            self._end_attempt(run, index, end, outcome="cancelled")
        for wait in run.waits.values():
            self._abandon(wait, end, "cancelled")
        run.waits.clear()
        run.span.attributes["mainspring.status"] = outcome
        run.span.attributes["mainspring.seq.end"] = run.seq
        self._close(run.span, end)
        self.runs.pop(event.run_id, None)

    # -- per event kind ------------------------------------------------------------

    def _task(self, run: _Run, index: int, ts: float) -> _Task:
        task = run.tasks.get(index)
        if task is None:
            task = run.tasks[index] = _Task()
        task.last_ns = int(ts * 1e9)
        if task.open is not None:
            self._current = task.open
        return task

    def _step_started(self, run: _Run, event: Event, data: StepStarted) -> None:
        start = int(event.ts * 1e9)
        step = data.step
        if step != run.step:
            if run.tasks:
                for index, old in run.tasks.items():
                    if old.open is not None or run.effects:  # (never in a well-formed journal)
                        self._end_attempt(run, index, old.last_ns, outcome="abandoned")
                run.tasks = {}
            run.step = step
        index = data.task
        task = run.tasks.get(index)
        if task is None:
            task = run.tasks[index] = _Task()
        elif task.open is not None:  # started again without an end: its process stopped
            self._end_attempt(run, index, task.last_ns, "abandoned")
        task.last_ns = start
        node = data.node
        # A workflow step, not an agent: GenAI conventions name no operation for it, so
        # no gen_ai.operation.name (backends would list every node as an agent call).
        attrs: dict[str, AttrValue] = {
            "mainspring.run_id": event.run_id,
            "mainspring.node": node,
            "mainspring.step": step,
            "mainspring.task": index,
            "mainspring.attempt": data.attempt,
            "mainspring.seq": event.seq,
        }
        if run.thread is not None:
            attrs["gen_ai.conversation.id"] = run.thread
        if data.rerun:
            attrs["mainspring.rerun"] = True
        if data.arg is not UNSET and self.capture.enabled:
            self._put(attrs, "mainspring.arg", data.arg)
        parent = run.span
        span = SpanRecord(
            f"node {node}",
            "node",
            event.run_id,
            parent.trace_id,
            attempt_span_id(event.run_id, event.seq),
            parent.span_id,
            start,
            None,
            "unset",
            "",
            attrs,
        )
        task.open = span
        task.attempts.append((start, span.span_id))
        self._current = span

    def _step_finished(self, run: _Run, event: Event, data: StepFinished) -> None:
        index = data.task
        task = run.tasks.get(index)
        span = task.open if task is not None else None
        if task is None or span is None or run.effects:  # the unusual cases take the general path
            task = self._task(run, index, event.ts)
            if task.open is not None:
                task.open.attributes["mainspring.outcome"] = "finished"
                self._put(task.open.attributes, "mainspring.update", data.update)
            self._end_attempt(run, index, task.last_ns)
            return
        # The common case, inlined: this runs once per step of every run.
        end = int(event.ts * 1e9)
        task.open, task.last_ns = None, end
        span.attributes["mainspring.outcome"] = "finished"
        if self.capture.enabled:
            self._put(span.attributes, "mainspring.update", data.update)
        span.end_ns = end if end > span.start_ns else span.start_ns
        self._closed.append(span)
        self._current = span

    def _step_failed(self, run: _Run, event: Event, data: StepFailed) -> None:
        index = data.task
        span = self._task(run, index, event.ts).open
        if span is not None:
            span.attributes["mainspring.outcome"] = "retrying" if data.retry else "failed"
            if data.retry:
                span.attributes["mainspring.retry.delay_s"] = float(data.delay)
            set_error(span, data.error, ns(event.ts))
        self._end_attempt(run, index, ns(event.ts))

    def _effect_started(self, run: _Run, event: Event, data: EffectStarted) -> None:
        task = self._task(run, data.task, event.ts)
        slot = (data.task, data.effect)
        if slot in run.effects:
            self._abandon(run.effects.pop(slot), ns(event.ts))
        name, key = data.name, data.key
        kind, short = effect_kind(name)
        attrs: dict[str, AttrValue] = {
            "mainspring.run_id": event.run_id,
            "mainspring.node": data.node,
            "mainspring.effect.name": name,
            "mainspring.effect.kind": kind,
            "mainspring.effect.index": data.effect,
            "mainspring.effect.key": key,
            "mainspring.attempt": data.attempt,
            "mainspring.seq": event.seq,
        }
        parent = task.open.span_id if task.open is not None else run.span.span_id
        span = SpanRecord(
            name,
            "effect",
            event.run_id,
            run.span.trace_id,
            effect_span_id(event.run_id, key),
            parent,
            ns(event.ts),
            attributes=attrs,
        )
        name_effect(span, kind, short, run.thread)
        run.effects[slot] = span
        self._current = span

    def _effect_finished(self, run: _Run, event: Event, data: EffectFinished) -> None:
        self._task(run, data.task, event.ts)
        span = run.effects.pop((data.task, data.effect), None)
        if span is None:
            return
        self._current = span
        result = None if data.result is UNSET else data.result
        kind, short = effect_kind(data.name, result)
        name_effect(span, kind, short, run.thread)
        usage = usage_of(result)
        if usage is not None:
            set_usage(span, usage)
        if data.error is not None:
            set_error(span, data.error, ns(event.ts))
        elif kind == "model":  # the reply where GenAI backends look for it
            messages = output_messages(result)
            set_reply(span, result, messages)
            if self.capture.enabled:
                text = self.capture.text("gen_ai.output.messages", messages, as_json=True)
                if text is not None:
                    span.attributes["gen_ai.output.messages"] = text
        else:
            key = "gen_ai.tool.call.result" if kind == "tool" else "mainspring.effect.result"
            self._put(span.attributes, key, result)
        self._close(span, ns(event.ts))

    def _interrupted(self, run: _Run, event: Event, data: Interrupted) -> None:
        ts = ns(event.ts)
        index = data.task
        task = self._task(run, index, event.ts)
        asked = task.attempts[-1][1] if task.attempts else None
        if task.open is not None:
            task.open.attributes["mainspring.outcome"] = "interrupted"
        self._end_attempt(run, index, ts)
        iid, node = data.id, data.node
        attrs: dict[str, AttrValue] = {
            "mainspring.run_id": event.run_id,
            "mainspring.node": node,
            "mainspring.interrupt.id": iid,
            "mainspring.seq": event.seq,
        }
        if data.child_run:
            attrs["mainspring.interrupt.child_run"] = data.child_run
        self._put(attrs, "mainspring.interrupt.payload", data.payload)
        span = SpanRecord(
            f"interrupt {node}",
            "wait",
            event.run_id,
            run.span.trace_id,
            wait_span_id(event.run_id, iid),
            run.span.span_id,
            ts,
            attributes=attrs,
        )
        if asked is not None:
            span.add_link(span.trace_id, asked)
        run.waits[iid] = span
        self._current = span

    def _resumed(self, run: _Run, event: Event, data: Resumed) -> None:
        for iid, value in data.values.items():
            span = run.waits.pop(iid, None)
            if span is not None:
                self._put(span.attributes, "mainspring.interrupt.value", value)
                self._close(span, ns(event.ts))

    def _emitted(self, run: _Run, event: Event, data: Emitted) -> None:
        task = self._task(run, data.task, event.ts)
        attrs: dict[str, AttrValue] = {"mainspring.seq": event.seq}
        self._put(attrs, "mainspring.data", data.data)
        (task.open or run.span).add_event(SpanEvent("mainspring.emitted", ns(event.ts), attrs))

    def _failed(self, run: _Run, event: Event, data: Failed) -> None:
        set_error(run.span, data.error, ns(event.ts))
        self._end_run(run, event, "failed")

    def _finished(self, run: _Run, event: Event, data: EventData) -> None:
        self._end_run(run, event, "finished")

    def _cancelled(self, run: _Run, event: Event, data: Cancelled) -> None:
        run.span.attributes["mainspring.cancel.reason"] = data.reason
        self._end_run(run, event, "cancelled")


# Each handler takes the data of its kind of event (``Event`` pairs a kind with its type).
_HANDLERS: dict[EventKind, Callable[[SpanBuilder, _Run, Event, Any], None]] = {
    EventKind.STEP_STARTED: SpanBuilder._step_started,
    EventKind.STEP_FINISHED: SpanBuilder._step_finished,
    EventKind.STEP_FAILED: SpanBuilder._step_failed,
    EventKind.EFFECT_STARTED: SpanBuilder._effect_started,
    EventKind.EFFECT_FINISHED: SpanBuilder._effect_finished,
    EventKind.INTERRUPTED: SpanBuilder._interrupted,
    EventKind.RESUMED: SpanBuilder._resumed,
    EventKind.EMITTED: SpanBuilder._emitted,
    EventKind.FAILED: SpanBuilder._failed,
    EventKind.FINISHED: SpanBuilder._finished,
    EventKind.CANCELLED: SpanBuilder._cancelled,
}


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
