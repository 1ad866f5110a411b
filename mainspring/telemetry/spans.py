"""From journals to spans: one state machine, fed live by the tracer or all at once by the CLI.

:func:`derive_spans` is the pure form: events in, span records out. The live
tracer feeds the same :class:`SpanBuilder` event by event and exports each span
as it closes, so what is traced live is what the journal says, exactly.

Spans (ids: :mod:`mainspring.telemetry.ids`):

* run (``invoke_workflow <graph>``): ``run_started`` to ``finished`` / ``failed`` /
  ``cancelled``; a subgraph run's parent is the parent task's attempt span;
* node attempt (``invoke_agent <node>``): ``step_started`` to ``step_finished`` /
  ``step_failed`` / ``interrupted``; each retry and each rerun after a resume is
  a span of its own under the run span;
* effect (``execute_tool <tool>``, ``chat <model>`` or the effect's name):
  ``effect_started`` to ``effect_finished``, under its attempt;
* interrupt wait (``interrupt <node>``): ``interrupted`` to ``resumed``, under the
  run span, linked to the attempt that asked.

A span whose process stopped before it closed (a crash) is closed as
*abandoned* when the journal shows the work starting again.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..events import Event, EventKind
from . import ids
from .conventions import AttrValue, Capture, effect_kind, usage_of

SpanKind = Literal["run", "node", "effect", "wait"]
Status = Literal["unset", "error"]

_NO_CAPTURE = Capture()


@dataclass(slots=True)
class SpanEvent:
    name: str
    ts_ns: int
    attributes: dict[str, AttrValue] = field(default_factory=dict)


@dataclass(slots=True)
class SpanRecord:
    """One span; ``end_ns`` is None while it is open."""

    name: str
    kind: SpanKind
    run_id: str
    trace_id: int
    span_id: int
    parent_id: int | None
    start_ns: int
    end_ns: int | None = None
    status: Status = "unset"
    status_message: str = ""
    attributes: dict[str, AttrValue] = field(default_factory=dict)
    events: list[SpanEvent] = field(default_factory=list)
    links: list[tuple[int, int]] = field(default_factory=list)  # (trace id, span id)
    client: bool = False  # a call out of the process (tool, model): span kind CLIENT

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "run_id": self.run_id,
            "trace_id": ids.hex_trace(self.trace_id),
            "span_id": ids.hex_span(self.span_id),
            "parent_id": None if self.parent_id is None else ids.hex_span(self.parent_id),
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "status": self.status,
            "status_message": self.status_message,
            "attributes": self.attributes,
            "events": [{"name": e.name, "ts_ns": e.ts_ns, "attributes": e.attributes} for e in self.events],
            "links": [{"trace_id": ids.hex_trace(t), "span_id": ids.hex_span(s)} for t, s in self.links],
        }


def _ns(ts: float) -> int:
    return int(ts * 1e9)


class _Task:
    __slots__ = ("attempts", "last_ns", "open")

    def __init__(self) -> None:
        self.attempts: list[tuple[int, int]] = []  # (start ns, span id) of each attempt this step
        self.open: SpanRecord | None = None
        self.last_ns = 0


class _Run:
    __slots__ = ("effects", "span", "step", "tasks", "thread", "waits")

    def __init__(self, span: SpanRecord, thread: str | None) -> None:
        self.span = span
        self.thread = thread
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
    (least recently active dropped first; their open spans are rebuilt from the
    journal if they come back).
    """

    def __init__(self, capture: Capture = _NO_CAPTURE, *, max_runs: int = 10_000) -> None:
        self.capture = capture
        self.max_runs = max_runs
        self.runs: OrderedDict[str, _Run] = OrderedDict()
        self.current: tuple[int, int] | None = None  # (trace, span) the last event belongs to
        self._closed: list[SpanRecord] = []

    # -- feeding -------------------------------------------------------------------

    def feed(self, event: Event, *, replay: bool = False) -> list[SpanRecord]:
        run = self.runs.get(event.run_id)
        if event.kind is EventKind.RUN_STARTED:
            run = self._start(event)
        elif run is None:
            run = self._adopt(event)
        else:
            self.runs.move_to_end(event.run_id)
        self.current = (run.span.trace_id, run.span.span_id)
        run.span.attributes["mainspring.seq.end"] = event.seq
        handler = _HANDLERS.get(event.kind)
        if handler is not None:
            handler(self, run, event)
        closed, self._closed = self._closed, []
        return [] if replay else closed

    def open_spans(self) -> list[SpanRecord]:
        out: list[SpanRecord] = []
        for run in self.runs.values():
            out.append(run.span)
            out.extend(t.open for t in run.tasks.values() if t.open is not None)
            out.extend(run.effects.values())
            out.extend(run.waits.values())
        return out

    def _register(self, run_id: str, run: _Run) -> _Run:
        self.runs[run_id] = run
        if len(self.runs) > self.max_runs:
            self.runs.popitem(last=False)
        return run

    def _start(self, event: Event) -> _Run:
        data, run_id, start = event.data, event.run_id, _ns(event.ts)
        parent = data.get("parent")
        metadata = data.get("metadata") or {}
        parent_id: int | None = None
        if isinstance(parent, dict):
            known = self.runs.get(parent["run_id"])
            if known is not None:
                trace = known.span.trace_id
                parent_id = known.attempt_at(parent["step"], parent["task"], start)
            else:
                trace = ids.trace_id(ids.guess_root(parent["run_id"]))
                parent_id = ids.run_span_id(parent["run_id"])
        else:
            trace = ids.trace_id(run_id)
        graph = str(data.get("graph", ""))
        agent = metadata.get("agent")
        op = "invoke_agent" if isinstance(agent, str) else "invoke_workflow"
        attrs: dict[str, AttrValue] = {
            "gen_ai.operation.name": op,
            "gen_ai.workflow.name": graph,
            "mainspring.run_id": run_id,
            "mainspring.graph": graph,
            "mainspring.seq": event.seq,
            "mainspring.durability": str(data.get("durability", "")),
        }
        if isinstance(agent, str):
            attrs["gen_ai.agent.name"] = agent
        thread = data.get("thread")
        if isinstance(thread, str):
            attrs["gen_ai.conversation.id"] = thread
        tenant = metadata.get("tenant")
        if isinstance(tenant, str):
            attrs["mainspring.tenant"] = tenant
        if isinstance(parent, dict):
            attrs["mainspring.parent_run_id"] = str(parent["run_id"])
        span = SpanRecord(
            f"{op} {agent if isinstance(agent, str) else graph}", "run", run_id, trace,
            ids.run_span_id(run_id), parent_id, start, attributes=attrs,
        )
        forked = data.get("forked_from")
        if isinstance(forked, dict):
            attrs["mainspring.forked_from.run_id"] = str(forked["run_id"])
            attrs["mainspring.forked_from.seq"] = int(forked["seq"])
            source = str(forked["run_id"])
            span.links.append((ids.trace_id(ids.guess_root(source)), ids.run_span_id(source)))
        self._put(attrs, "mainspring.input", data.get("input"))
        return self._register(run_id, _Run(span, thread if isinstance(thread, str) else None))

    def _adopt(self, event: Event) -> _Run:
        """A run whose start this builder never saw and cannot read: trace it from here on."""
        run_id = event.run_id
        parent = max((r for r in self.runs if run_id.startswith(r + "/")), key=len, default=None)
        parent_id: int | None
        if parent is not None:
            trace, parent_id = self.runs[parent].span.trace_id, self.runs[parent].span.span_id
        else:
            root = ids.guess_root(run_id)
            trace = ids.trace_id(root)
            parent_id = None if root == run_id else ids.run_span_id(run_id.rsplit("/", 1)[0])
        attrs: dict[str, AttrValue] = {
            "gen_ai.operation.name": "invoke_workflow",
            "mainspring.run_id": run_id,
            "mainspring.seq": event.seq,
            "mainspring.partial": True,  # the journal before this point was not read
        }
        span = SpanRecord(
            "invoke_workflow", "run", run_id, trace, ids.run_span_id(run_id), parent_id,
            _ns(event.ts), attributes=attrs,
        )
        return self._register(run_id, _Run(span, None))

    # -- closing -------------------------------------------------------------------

    def _put(self, attrs: dict[str, AttrValue], key: str, value: Any) -> None:
        text = self.capture.text(key, value)
        if text is not None:
            attrs[key] = text

    def _close(self, span: SpanRecord, end_ns: int) -> None:
        span.end_ns = max(end_ns, span.start_ns)
        self._closed.append(span)

    def _abandon(self, span: SpanRecord, end_ns: int, outcome: str = "abandoned") -> None:
        span.attributes["mainspring.outcome"] = outcome
        if outcome == "abandoned":
            span.status = "error"
            span.status_message = "abandoned: the process driving it stopped; the run went on from its journal"
        if span.kind == "effect":
            key = span.attributes.get("mainspring.effect.key")
            if isinstance(key, str):  # the key's own id is the rerun's (see ids.abandoned_effect_span_id)
                span.span_id = ids.abandoned_effect_span_id(span.run_id, key, int(span.attributes["mainspring.seq"]))
        self._close(span, end_ns)

    def _end_attempt(self, run: _Run, index: int, end_ns: int, outcome: str | None = None) -> None:
        """Close what is left open of task ``index``'s attempt (effects first)."""
        for key in [k for k in run.effects if k[0] == index]:
            self._abandon(run.effects.pop(key), end_ns, outcome or "abandoned")
        task = run.tasks.get(index)
        if task is not None and task.open is not None:
            span, task.open = task.open, None
            if outcome is None:
                self._close(span, end_ns)
            else:
                self._abandon(span, end_ns, outcome)

    def _end_run(self, run: _Run, event: Event, outcome: str) -> None:
        end = _ns(event.ts)
        for index in list(run.tasks):  # siblings of a failed task are cancelled with the run
            self._end_attempt(run, index, end, outcome="cancelled")
        for wait in run.waits.values():
            self._abandon(wait, end, "cancelled")
        run.waits.clear()
        run.span.attributes["mainspring.status"] = outcome
        self._close(run.span, end)
        self.runs.pop(event.run_id, None)

    # -- per event kind ------------------------------------------------------------

    def _task(self, run: _Run, event: Event) -> tuple[int, _Task]:
        index = int(event.data.get("task", 0))
        task = run.tasks.get(index)
        if task is None:
            task = run.tasks[index] = _Task()
        task.last_ns = _ns(event.ts)
        if task.open is not None:
            self.current = (task.open.trace_id, task.open.span_id)
        return index, task

    def _step_started(self, run: _Run, event: Event) -> None:
        data, start = event.data, _ns(event.ts)
        step = int(data["step"])
        if step != run.step:
            for index, old in list(run.tasks.items()):
                self._end_attempt(run, index, old.last_ns, outcome="abandoned")
            run.step, run.tasks = step, {}
        index = int(data["task"])
        task = run.tasks.get(index)
        if task is None:
            task = run.tasks[index] = _Task()
        elif task.open is not None:  # started again without an end: its process stopped
            self._end_attempt(run, index, task.last_ns, "abandoned")
        task.last_ns = start
        node = str(data["node"])
        attrs: dict[str, AttrValue] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": node,
            "mainspring.run_id": event.run_id,
            "mainspring.node": node,
            "mainspring.step": step,
            "mainspring.task": index,
            "mainspring.attempt": int(data.get("attempt", 1)),
            "mainspring.seq": event.seq,
        }
        if run.thread is not None:
            attrs["gen_ai.conversation.id"] = run.thread
        if data.get("rerun"):
            attrs["mainspring.rerun"] = True
        if "arg" in data:
            self._put(attrs, "mainspring.arg", data["arg"])
        span = SpanRecord(
            f"invoke_agent {node}", "node", event.run_id, run.span.trace_id,
            ids.attempt_span_id(event.run_id, event.seq), run.span.span_id, start, attributes=attrs,
        )
        task.open = span
        task.attempts.append((start, span.span_id))
        self.current = (span.trace_id, span.span_id)

    def _step_finished(self, run: _Run, event: Event) -> None:
        index, task = self._task(run, event)
        if task.open is not None:
            task.open.attributes["mainspring.outcome"] = "finished"
            self._put(task.open.attributes, "mainspring.update", event.data.get("update"))
        self._end_attempt(run, index, _ns(event.ts))

    def _step_failed(self, run: _Run, event: Event) -> None:
        index, task = self._task(run, event)
        span = task.open
        if span is not None:
            retry = bool(event.data.get("retry"))
            span.attributes["mainspring.outcome"] = "retrying" if retry else "failed"
            if retry:
                span.attributes["mainspring.retry.delay_s"] = float(event.data.get("delay") or 0.0)
            _set_error(span, event.data.get("error"), _ns(event.ts))
        self._end_attempt(run, index, _ns(event.ts))

    def _effect_started(self, run: _Run, event: Event) -> None:
        data = event.data
        index, task = self._task(run, event)
        slot = (index, int(data["effect"]))
        if slot in run.effects:
            self._abandon(run.effects.pop(slot), _ns(event.ts))
        name = str(data["name"])
        key = str(data.get("key", f"{event.run_id}:{event.seq}"))
        kind, short = effect_kind(name)
        attrs: dict[str, AttrValue] = {
            "mainspring.run_id": event.run_id,
            "mainspring.node": str(data.get("node", "")),
            "mainspring.effect.name": name,
            "mainspring.effect.kind": kind,
            "mainspring.effect.index": slot[1],
            "mainspring.effect.key": key,
            "mainspring.attempt": int(data.get("attempt", 1)),
            "mainspring.seq": event.seq,
        }
        parent = task.open.span_id if task.open is not None else run.span.span_id
        span = SpanRecord(
            name, "effect", event.run_id, run.span.trace_id, ids.effect_span_id(event.run_id, key),
            parent, _ns(event.ts), attributes=attrs,
        )
        _name_effect(span, kind, short, run.thread)
        run.effects[slot] = span
        self.current = (span.trace_id, span.span_id)

    def _effect_finished(self, run: _Run, event: Event) -> None:
        data = event.data
        self._task(run, event)
        span = run.effects.pop((int(data.get("task", 0)), int(data["effect"])), None)
        if span is None:
            return
        self.current = (span.trace_id, span.span_id)
        result = data.get("result")
        kind, short = effect_kind(str(data["name"]), result)
        _name_effect(span, kind, short, run.thread)
        usage = usage_of(result)
        if usage is not None:
            attrs = span.attributes
            attrs["gen_ai.usage.input_tokens"] = usage.input_tokens
            attrs["gen_ai.usage.output_tokens"] = usage.output_tokens
            if usage.model:
                attrs["gen_ai.response.model"] = usage.model
                attrs.setdefault("gen_ai.request.model", usage.model)
            if usage.provider:
                attrs["gen_ai.provider.name"] = usage.provider
            if usage.cost_usd is not None:
                attrs["mainspring.cost_usd"] = usage.cost_usd
        if "error" in data:
            _set_error(span, data["error"], _ns(event.ts))
        else:
            key = "gen_ai.tool.call.result" if kind == "tool" else "mainspring.effect.result"
            self._put(span.attributes, key, result)
        self._close(span, _ns(event.ts))

    def _interrupted(self, run: _Run, event: Event) -> None:
        data, ts = event.data, _ns(event.ts)
        index, task = self._task(run, event)
        asked = task.attempts[-1][1] if task.attempts else None
        if task.open is not None:
            task.open.attributes["mainspring.outcome"] = "interrupted"
        self._end_attempt(run, index, ts)
        iid, node = str(data["id"]), str(data.get("node", ""))
        attrs: dict[str, AttrValue] = {
            "mainspring.run_id": event.run_id,
            "mainspring.node": node,
            "mainspring.interrupt.id": iid,
            "mainspring.seq": event.seq,
        }
        if data.get("child_run"):
            attrs["mainspring.interrupt.child_run"] = str(data["child_run"])
        self._put(attrs, "mainspring.interrupt.payload", data.get("payload"))
        span = SpanRecord(
            f"interrupt {node}", "wait", event.run_id, run.span.trace_id,
            ids.wait_span_id(event.run_id, iid), run.span.span_id, ts, attributes=attrs,
        )
        if asked is not None:
            span.links.append((span.trace_id, asked))
        run.waits[iid] = span
        self.current = (span.trace_id, span.span_id)

    def _resumed(self, run: _Run, event: Event) -> None:
        values = event.data.get("values") or {}
        for iid, value in values.items():
            span = run.waits.pop(str(iid), None)
            if span is not None:
                self._put(span.attributes, "mainspring.interrupt.value", value)
                self._close(span, _ns(event.ts))

    def _emitted(self, run: _Run, event: Event) -> None:
        _, task = self._task(run, event)
        attrs: dict[str, AttrValue] = {"mainspring.seq": event.seq}
        self._put(attrs, "mainspring.data", event.data.get("data"))
        (task.open or run.span).events.append(SpanEvent("mainspring.emitted", _ns(event.ts), attrs))

    def _failed(self, run: _Run, event: Event) -> None:
        _set_error(run.span, event.data.get("error"), _ns(event.ts))
        self._end_run(run, event, "failed")

    def _finished(self, run: _Run, event: Event) -> None:
        self._end_run(run, event, "finished")

    def _cancelled(self, run: _Run, event: Event) -> None:
        run.span.attributes["mainspring.cancel.reason"] = str(event.data.get("reason", ""))
        self._end_run(run, event, "cancelled")


def _name_effect(span: SpanRecord, kind: str, short: str, thread: str | None) -> None:
    attrs = span.attributes
    attrs["mainspring.effect.kind"] = kind
    if kind == "tool":
        span.name, span.client = f"execute_tool {short}", True
        attrs["gen_ai.operation.name"] = "execute_tool"
        attrs["gen_ai.tool.name"] = short
        attrs["gen_ai.tool.type"] = "function"
        attrs["gen_ai.tool.call.id"] = str(attrs["mainspring.effect.key"])
    elif kind == "model":
        model = str(attrs.get("gen_ai.request.model", short))
        span.name, span.client = f"chat {model}", True
        attrs["gen_ai.operation.name"] = "chat"
        attrs.setdefault("gen_ai.request.model", short)
        if thread is not None:
            attrs["gen_ai.conversation.id"] = thread


def _set_error(span: SpanRecord, error: Any, ts_ns: int) -> None:
    err = error if isinstance(error, dict) else {}
    kind, message = str(err.get("type", "Error")), str(err.get("message", ""))
    span.status, span.status_message = "error", f"{kind}: {message}"
    span.attributes["error.type"] = kind
    attrs: dict[str, AttrValue] = {"exception.type": kind, "exception.message": message}
    if err.get("traceback"):
        attrs["exception.stacktrace"] = str(err["traceback"])
    span.events.append(SpanEvent("exception", ts_ns, attrs))


_HANDLERS: dict[EventKind, Callable[[SpanBuilder, _Run, Event], None]] = {
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


def derive_spans(events: Iterable[Event], capture: Capture = _NO_CAPTURE) -> list[SpanRecord]:
    """Every span of the given journals, closed ones and those still open (``end_ns`` None)."""
    builder = SpanBuilder(capture, max_runs=1 << 30)
    spans: list[SpanRecord] = []
    for event in in_causal_order(events):
        spans.extend(builder.feed(event))
    spans.extend(builder.open_spans())
    spans.sort(key=lambda s: (s.start_ns, s.kind != "run", s.span_id))
    return spans
