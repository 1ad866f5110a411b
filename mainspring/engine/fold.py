"""The journal fold: a run's whole durable state, rebuilt from its events.

The live engine and resume use the same ``RunFold.apply``: the engine appends
an event and applies it; resume applies the stored events one by one. There is
no second implementation of what an event means.

Supersteps: the tasks of step ``k`` are announced together by their
``step_started`` events; their updates are applied to the state together, in
task order, when the step closes (when step ``k+1`` starts, or the run ends).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec

from ..errors import NondeterminismError
from ..events import (
    RUN_STARTED,
    UNSET,
    EffectFinished,
    EffectStarted,
    ErrorInfo,
    Event,
    EventData,
    EventKind,
    Failed,
    ForkedFrom,
    Interrupted,
    ParentRef,
    Resumed,
    RunStarted,
    StepFailed,
    StepFinished,
    StepStarted,
    to_jsonable,
)
from ..state import StateSchema
from ..status import FINISHED, RUNNING, RunStatus

NO_ARG: Final = UNSET  # a task driven by the graph state, not by a Send (StepStarted.arg)


class EffectRecord(msgspec.Struct):
    name: str
    key: str
    attempt: int
    done: bool = False
    ok: bool = False
    result: Any = None
    error: ErrorInfo | None = None


class InterruptRecord(msgspec.Struct):
    id: str
    index: int
    payload: Any
    resumed: bool = False
    value: Any = None
    child: str | None = None  # the interrupt of a subgraph run this one stands for


class TaskRecord:
    """One task of the current step: a node to run (with a Send payload, if any)."""

    __slots__ = (
        "arg",
        "attempt",
        "effects",
        "error",
        "finished",
        "index",
        "interrupts",
        "node",
        "update",
    )

    def __init__(
        self, index: int, node: str, arg: Any = NO_ARG, attempt: int = 1, finished: bool = False
    ) -> None:
        self.index = index
        self.node = node
        self.arg = arg
        self.attempt = attempt
        self.finished = finished
        self.update: Any = None
        self.error: ErrorInfo | None = None  # the task failed for good
        self.effects: dict[int, EffectRecord] = {}
        self.interrupts: dict[int, InterruptRecord] = {}

    def __repr__(self) -> str:
        return f"<TaskRecord {self.index} {self.node!r} finished={self.finished}>"

    @property
    def waiting(self) -> bool:
        """Parked on an interrupt that has no resume value yet."""
        if not self.interrupts:
            return False
        return any(not i.resumed for i in self.interrupts.values())

    @property
    def runnable(self) -> bool:
        return not self.finished and self.error is None and not (self.interrupts and self.waiting)


class RunFold:
    """Everything about a run that the journal says, folded event by event."""

    __slots__ = (
        "closed",
        "error",
        "forked_from",
        "graph",
        "input",
        "joins",
        "metadata",
        "nonce",
        "parent",
        "revive",
        "run_id",
        "schema",
        "seq",
        "state",
        "status",
        "step",
        "tasks",
        "thread",
    )

    def __init__(self, schema: StateSchema[Any], *, revive: bool = False) -> None:
        self.schema = schema
        self.revive = revive  # events come from JSON: turn values back into their types
        self.run_id = ""
        self.graph = ""
        self.thread: str | None = None
        self.parent: ParentRef | None = None
        self.forked_from: ForkedFrom | None = None
        self.nonce: str | None = None  # of run_started; None in runs older than nonces
        self.metadata: dict[str, Any] = {}
        self.input: Any = None
        self.state: dict[str, Any] = {}
        self.step = -1
        self.tasks: list[TaskRecord] = []
        self.closed = True
        self.joins: dict[str, list[str]] = {}
        self.seq = 0
        self.status = RUNNING
        self.error: ErrorInfo | None = None

    # -- queries -----------------------------------------------------------------

    @property
    def pending_interrupts(self) -> list[tuple[TaskRecord, InterruptRecord]]:
        return [(t, i) for t in self.tasks for i in t.interrupts.values() if not i.resumed]

    @property
    def step_complete(self) -> bool:
        for task in self.tasks:  # noqa: SIM110 (a plain loop: this runs at every step)
            if not task.finished:
                return False
        return True

    def find_interrupt(self, interrupt_id: str) -> InterruptRecord | None:
        for t in self.tasks:
            for i in t.interrupts.values():
                if i.id == interrupt_id:
                    return i
        return None

    # -- folding -----------------------------------------------------------------

    def apply(self, event: Event) -> None:
        if event.seq != self.seq + 1:
            raise NondeterminismError(
                f"journal of run {event.run_id!r} jumps from sequence {self.seq} to {event.seq}"
            )
        self.seq = event.seq
        if event.kind is RUN_STARTED:
            self.run_id = event.run_id
        HANDLERS[event.kind](self, event.data)

    def close_step(self) -> None:
        """Apply the current step's updates, in task order, to the state."""
        if self.closed:
            return
        tasks = self.tasks
        if len(tasks) == 1:  # the common case, without building lists
            updates = [(tasks[0].node, tasks[0].update)] if tasks[0].update else None
        else:
            updates = [(t.node, t.update) for t in tasks if t.update]
        if updates:
            self.state = self.schema.apply(self.state, updates)
        self.closed = True

    def _run_started(self, data: RunStarted) -> None:
        self.graph = data.graph
        self.thread = data.thread
        self.parent = data.parent
        self.forked_from = data.forked_from
        self.nonce = data.nonce
        self.metadata = data.metadata or {}
        self.input = data.input
        # From the journal (revive): JSON, with the state's typed fields to be revived.
        initial = self.schema.initial_from_json if self.revive else self.schema.initial
        self.state = initial(self.input)

    def _step_started(self, data: StepStarted) -> None:
        step = data.step
        tasks = self.tasks
        if step != self.step:
            if not self.closed:
                self.close_step()
            self.step = step
            self.tasks = tasks = []
            self.closed = False
            if data.joins is not None:
                self.joins = data.joins
        index = data.task
        if index == len(tasks):
            tasks.append(TaskRecord(index, data.node, data.arg, data.attempt))
        else:
            tasks[index].attempt = data.attempt
        self.status = RUNNING

    def _step_finished(self, data: StepFinished) -> None:
        task = self.tasks[data.task]
        update = data.update
        if update and self.revive:
            update = self.schema.revive_update(update)
        task.update = update
        task.finished = True

    def _step_failed(self, data: StepFailed) -> None:
        if not data.retry:
            self.tasks[data.task].error = data.error

    def _effect_started(self, data: EffectStarted) -> None:
        self.tasks[data.task].effects[data.effect] = EffectRecord(data.name, data.key, data.attempt)

    def _effect_finished(self, data: EffectFinished) -> None:
        record = self.tasks[data.task].effects[data.effect]
        record.done = True
        if data.error is not None:
            record.error = data.error
        else:
            record.ok = True
            record.result = None if data.result is UNSET else data.result

    def _interrupted(self, data: Interrupted) -> None:
        task = self.tasks[data.task]
        task.interrupts[data.interrupt] = InterruptRecord(
            data.id, data.interrupt, data.payload, child=data.child
        )

    def _resumed(self, data: Resumed) -> None:
        for interrupt_id, value in data.values.items():
            record = self.find_interrupt(interrupt_id)
            if record is not None:
                record.resumed = True
                record.value = value
        self.status = RUNNING

    def _ignored(self, data: EventData) -> None:
        return None  # for the record only (emitted, discarded)

    def _failed(self, data: Failed) -> None:
        self.status = RunStatus.FAILED
        self.error = data.error

    def _finished(self, data: EventData) -> None:
        self.close_step()
        self.status = FINISHED

    def _cancelled(self, data: EventData) -> None:
        self.status = RunStatus.CANCELLED

    # -- snapshots -------------------------------------------------------------------

    def to_snapshot(self) -> dict[str, Any]:
        snapshot: dict[str, Any] = to_jsonable(
            {
                "run": {
                    "run_id": self.run_id,
                    "graph": self.graph,
                    "thread": self.thread,
                    "parent": self.parent,
                    "forked_from": self.forked_from,
                    "nonce": self.nonce,
                    "metadata": self.metadata,
                    "input": self.input,
                },
                "state": self.state,
                "step": self.step,
                "closed": self.closed,
                "joins": self.joins,
                "status": str(self.status),
                "tasks": [_task_to_json(t) for t in self.tasks],
            },
            what="a run snapshot",
        )
        return snapshot

    @classmethod
    def from_snapshot(cls, schema: StateSchema[Any], seq: int, data: dict[str, Any]) -> RunFold:
        fold = cls(schema, revive=True)
        run = data["run"]
        fold.run_id, fold.graph, fold.thread = run["run_id"], run["graph"], run["thread"]
        fold.parent = _convert(run["parent"], ParentRef)
        fold.metadata, fold.input = run["metadata"], run["input"]
        fold.forked_from = _convert(run.get("forked_from"), ForkedFrom)  # not in release 0.1
        fold.nonce = run.get("nonce")
        fold.state = schema.revive_state(data["state"])
        fold.step, fold.closed, fold.joins = data["step"], data["closed"], data["joins"]
        fold.status = RunStatus(data["status"])
        fold.tasks = [_task_from_json(schema, t) for t in data["tasks"]]
        fold.seq = seq
        return fold


def _task_to_json(t: TaskRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": t.index,
        "node": t.node,
        "attempt": t.attempt,
        "finished": t.finished,
        "update": t.update,
        "error": t.error,
        "effects": {
            str(n): [e.name, e.key, e.attempt, e.done, e.ok, e.result, e.error]
            for n, e in t.effects.items()
        },
        "interrupts": {
            str(n): [i.id, i.payload, i.resumed, i.value, i.child] for n, i in t.interrupts.items()
        },
    }
    if t.arg is not NO_ARG:
        out["arg"] = t.arg
    return out


def _task_from_json(schema: StateSchema[Any], d: dict[str, Any]) -> TaskRecord:
    t = TaskRecord(d["index"], d["node"], d.get("arg", NO_ARG), d["attempt"], d["finished"])
    t.update = schema.revive_update(d["update"]) if d["update"] else d["update"]
    t.error = _convert(d["error"], ErrorInfo)
    t.effects = {
        int(n): EffectRecord(e[0], e[1], e[2], e[3], e[4], e[5], _convert(e[6], ErrorInfo))
        for n, e in d["effects"].items()
    }
    t.interrupts = {
        int(n): InterruptRecord(i[0], int(n), i[1], i[2], i[3], i[4])
        for n, i in d["interrupts"].items()
    }
    return t


# What each kind of event does to the fold. ``apply`` checks the sequence first;
# the live driver, which numbers its own events, calls these directly.
HANDLERS: Final[dict[EventKind, Callable[[RunFold, Any], None]]] = {
    EventKind.RUN_STARTED: RunFold._run_started,
    EventKind.STEP_STARTED: RunFold._step_started,
    EventKind.STEP_FINISHED: RunFold._step_finished,
    EventKind.STEP_FAILED: RunFold._step_failed,
    EventKind.EFFECT_STARTED: RunFold._effect_started,
    EventKind.EFFECT_DECIDED: RunFold._ignored,  # the effect's own events say what came of it
    EventKind.EFFECT_FINISHED: RunFold._effect_finished,
    EventKind.INTERRUPTED: RunFold._interrupted,
    EventKind.RESUMED: RunFold._resumed,
    EventKind.EMITTED: RunFold._ignored,
    EventKind.DISCARDED: RunFold._ignored,
    EventKind.FAILED: RunFold._failed,
    EventKind.FINISHED: RunFold._finished,
    EventKind.CANCELLED: RunFold._cancelled,
}


def _convert(value: Any, kind: type[Any]) -> Any:
    """A snapshot's plain data (a dict) back as the type it stands for."""
    return None if value is None else msgspec.convert(value, kind)
