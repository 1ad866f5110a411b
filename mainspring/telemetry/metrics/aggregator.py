"""What each journal event means for the metrics: :class:`MetricsAggregator`.

A state machine over events (like :class:`~mainspring.telemetry.spans.derive.SpanBuilder`)
that reports observations of the instruments of :mod:`.instruments` to a sink.
Labels are bounded: graph, node, effect kind and name, model, tenant, never a run
id; past ``max_series`` label sets per metric, new ones are counted as ``other``.

Gauges (active runs, interrupts waiting) count what this process has seen
happen: a run it only knows from history is not counted up, so never down.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from ...events import (
    UNSET,
    EffectFinished,
    EffectStarted,
    Event,
    EventData,
    EventKind,
    Interrupted,
    Resumed,
    RunStarted,
    StepFailed,
    StepFinished,
    StepStarted,
)
from ..conventions import effect_kind, usage_of
from .instruments import MetricsSink

#: ``pricing(model, input_tokens, output_tokens)``: cost in USD when a result does not say.
Pricing = Callable[[str, int, int], float | None]

OTHER: Final = "other"


class _RunState:
    __slots__ = (
        "active",
        "attempts",
        "counted",
        "effects",
        "graph",
        "step",
        "tasks",
        "tenant",
        "waiting",
    )

    def __init__(self, graph: str, tenant: str) -> None:
        self.graph = graph
        self.tenant = tenant
        self.active = False  # counted in mainspring_active_runs by this process
        self.step = -1
        self.tasks: set[int] = set()  # unfinished tasks of the current step
        self.attempts: dict[int, float] = {}  # task -> start of its current attempt
        self.effects: dict[tuple[int, int], float] = {}
        self.waiting: dict[str, int] = {}  # interrupt id -> task
        self.counted: set[str] = set()  # waiting interrupts counted by this process


class MetricsAggregator:
    """Feeds observations to ``sink`` as events arrive; ``replay`` events only rebuild state."""

    def __init__(
        self,
        sink: MetricsSink,
        *,
        pricing: Pricing | None = None,
        max_series: int = 1000,
        max_runs: int = 10_000,
    ) -> None:
        self.sink = sink
        self.pricing = pricing
        self.max_series = max_series
        self.max_runs = max_runs
        self.runs: OrderedDict[str, _RunState] = OrderedDict()
        self._series: dict[str, set[tuple[str, ...]]] = {}

    # -- bounded labels ------------------------------------------------------------

    def _labels(self, name: str, labels: tuple[str, ...]) -> tuple[str, ...]:
        seen = self._series.setdefault(name, set())
        if labels in seen:
            return labels
        if len(seen) >= self.max_series:
            return tuple(OTHER for _ in labels)
        seen.add(labels)
        return labels

    def add(self, name: str, labels: tuple[str, ...], value: float = 1.0) -> None:
        self.sink.add(name, self._labels(name, labels), value)

    def observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        self.sink.observe(name, self._labels(name, labels), value)

    # -- events --------------------------------------------------------------------

    def feed(self, event: Event, replay: bool = False) -> None:
        kind, data, live = event.kind, event.data, not replay
        run = self.runs.get(event.run_id)
        if kind is EventKind.RUN_STARTED:
            assert isinstance(data, RunStarted)
            run = self._start(event.run_id, data)
            if live:
                self.add("mainspring_runs_started", (run.graph,))
        elif run is None:
            run = self._register(event.run_id, _RunState("", ""))
        else:
            self.runs.move_to_end(event.run_id)
        if live and kind not in _ENDS and not run.active and kind is not EventKind.INTERRUPTED:
            run.active = True
            self.add("mainspring_active_runs", (run.graph,), 1)
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, run, event, data, live)

    def _register(self, run_id: str, state: _RunState) -> _RunState:
        self.runs[run_id] = state
        if len(self.runs) > self.max_runs:
            self.runs.popitem(last=False)
        return state

    def _start(self, run_id: str, data: RunStarted) -> _RunState:
        tenant = (data.metadata or {}).get("tenant")
        parent = data.parent
        if not isinstance(tenant, str) and parent is not None:
            above = self.runs.get(parent.run_id)
            tenant = above.tenant if above is not None else None
        return self._register(
            run_id, _RunState(data.graph, tenant if isinstance(tenant, str) else "")
        )

    def _park_or_go(self, run: _RunState) -> None:
        """A run whose open tasks all wait on interrupts is parked: no longer active."""
        if run.active and run.waiting and run.tasks <= set(run.waiting.values()):
            run.active = False
            self.add("mainspring_active_runs", (run.graph,), -1)

    def _step_started(self, run: _RunState, event: Event, data: StepStarted, live: bool) -> None:
        step, task = data.step, data.task
        if step != run.step:
            run.step, run.tasks, run.attempts = step, set(), {}
        run.tasks.add(task)
        run.attempts[task] = event.ts

    def _step_ended(
        self, run: _RunState, event: Event, data: StepFinished | StepFailed, live: bool
    ) -> None:
        task = data.task
        started = run.attempts.pop(task, None)
        retry = isinstance(data, StepFailed) and data.retry
        if not retry:
            run.tasks.discard(task)
        if not live:
            return
        if started is not None:
            self.observe(
                "mainspring_step_duration_seconds",
                (run.graph, data.node),
                max(0.0, event.ts - started),
            )
        if retry:
            self.add("mainspring_retries", (run.graph, data.node))

    def _effect_started(
        self, run: _RunState, event: Event, data: EffectStarted, live: bool
    ) -> None:
        run.effects[(data.task, data.effect)] = event.ts

    def _effect_finished(
        self, run: _RunState, event: Event, data: EffectFinished, live: bool
    ) -> None:
        started = run.effects.pop((data.task, data.effect), None)
        if not live:
            return
        result = None if data.result is UNSET else data.result
        kind, name = effect_kind(data.name, result)
        if started is not None:
            self.observe(
                "mainspring_effect_duration_seconds", (kind, name), max(0.0, event.ts - started)
            )
        if data.error is not None:
            self.add("mainspring_effect_errors", (kind, name))
        usage = usage_of(result)
        if usage is not None:
            model = usage.model or name
            self.add("mainspring_tokens", (model, run.tenant, "input"), usage.input_tokens)
            self.add("mainspring_tokens", (model, run.tenant, "output"), usage.output_tokens)
            if usage.ttft is not None:
                self.observe("mainspring_model_ttft_seconds", (model,), usage.ttft)
            if usage.cached_tokens:
                self.add("mainspring_tokens", (model, run.tenant, "cached"), usage.cached_tokens)
            if usage.reasoning_tokens:
                self.add(
                    "mainspring_tokens", (model, run.tenant, "reasoning"), usage.reasoning_tokens
                )
            cost = usage.cost_usd
            if cost is None and self.pricing is not None:
                cost = self.pricing(model, usage.input_tokens, usage.output_tokens)
            if cost:
                self.add("mainspring_cost_usd", (model, run.tenant), cost)

    def _interrupted(self, run: _RunState, event: Event, data: Interrupted, live: bool) -> None:
        iid, task = data.id, data.task
        run.attempts.pop(task, None)
        run.waiting[iid] = task
        if live:
            if not data.child:  # one standing for a subgraph's is counted there
                run.counted.add(iid)
                self.add("mainspring_interrupts_waiting", (run.graph,), 1)
            self._park_or_go(run)

    def _resumed(self, run: _RunState, event: Event, data: Resumed, live: bool) -> None:
        for iid in data.values:
            run.waiting.pop(iid, None)
            if iid in run.counted:
                run.counted.discard(iid)
                self.add("mainspring_interrupts_waiting", (run.graph,), -1)

    def _ended(self, run: _RunState, event: Event, data: EventData, live: bool) -> None:
        if run.counted:
            self.add("mainspring_interrupts_waiting", (run.graph,), -len(run.counted))
            run.counted.clear()
        if run.active:
            run.active = False
            self.add("mainspring_active_runs", (run.graph,), -1)
        if live:
            self.add(_ENDS[event.kind], (run.graph,))
        self.runs.pop(event.run_id, None)


_ENDS: Final = {
    EventKind.FINISHED: "mainspring_runs_finished",
    EventKind.FAILED: "mainspring_runs_failed",
    EventKind.CANCELLED: "mainspring_runs_cancelled",
}

# Each handler takes the data of its kind of event (``Event`` pairs a kind with its type).
_HANDLERS: Final[
    dict[EventKind, Callable[[MetricsAggregator, _RunState, Event, Any, bool], None]]
] = {
    EventKind.STEP_STARTED: MetricsAggregator._step_started,
    EventKind.STEP_FINISHED: MetricsAggregator._step_ended,
    EventKind.STEP_FAILED: MetricsAggregator._step_ended,
    EventKind.EFFECT_STARTED: MetricsAggregator._effect_started,
    EventKind.EFFECT_FINISHED: MetricsAggregator._effect_finished,
    EventKind.INTERRUPTED: MetricsAggregator._interrupted,
    EventKind.RESUMED: MetricsAggregator._resumed,
    EventKind.FINISHED: MetricsAggregator._ended,
    EventKind.FAILED: MetricsAggregator._ended,
    EventKind.CANCELLED: MetricsAggregator._ended,
}
