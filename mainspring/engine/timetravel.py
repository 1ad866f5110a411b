"""Time travel over journals: state at any sequence number, fork, deterministic replay."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from ..errors import NondeterminismError, RunStateError
from ..events import (
    UNSET,
    EffectFinished,
    EffectStarted,
    ErrorInfo,
    Event,
    EventKind,
    Failed,
    Finished,
    ForkedFrom,
    Resumed,
    StepFinished,
    to_jsonable,
)
from ..graph.compiled import CompiledGraph
from ..status import Durability, RunStatus
from ..store import RunRecord
from ..store.memory import MemoryStore
from .fold import RunFold, TaskRecord
from .outcome import PendingInterrupt, outcome_of
from .recorded import recorded_error, reusable_effects, revive
from .runs import Runs, started_of
from .seams import ActiveRun

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..state import StateSchema


@dataclass(frozen=True, slots=True)
class StateView:
    """A run's state as of one sequence number of its journal."""

    run_id: str
    seq: int
    step: int
    status: RunStatus
    values: Any
    next: list[str]  # nodes of the current step that have not finished
    interrupts: list[PendingInterrupt] = field(default_factory=list)


async def state_at(
    runs: Runs, run_id: str, at: int | None, graph: CompiledGraph | None
) -> StateView:
    record = await runs.record(run_id)
    if at is not None and not 1 <= at <= record.last_seq:
        raise RunStateError(
            f"run {run_id!r} has sequence numbers 1 to {record.last_seq}; {at} is outside"
        )
    app = await runs.graph_of(run_id, graph)
    fold = await runs.load_fold(app, run_id, at=at)
    outcome = outcome_of(fold)
    return StateView(
        run_id,
        fold.seq,
        fold.step,
        outcome.status,
        outcome.state,
        [t.node for t in fold.tasks if not t.finished],
        outcome.interrupts,
    )


ForkEffects = Literal["rerun", "reuse"]


async def fork_run(
    runs: Runs,
    run_id: str,
    at: int | None,
    *,
    new_run_id: str | None,
    graph: CompiledGraph | None,
    thread: str | None,
    start: bool,
    effects: ForkEffects | None,
    actor: str | None = None,
) -> str:
    """Copy the journal of ``run_id`` up to ``at`` into a new run and continue it from there
    (its driver writes the copy, as any journal is written); the new run's id."""
    if effects not in (None, "rerun", "reuse"):
        raise RunStateError(f"fork(effects={effects!r}): use 'rerun', 'reuse' or None")
    record = await runs.record(run_id)
    at = record.last_seq if at is None else at
    if not 1 <= at <= record.last_seq:
        raise RunStateError(
            f"run {run_id!r} has sequence numbers 1 to {record.last_seq}; cannot fork at {at}"
        )
    everything = await runs.store.read(run_id)
    events = everything[:at]
    if effects is None:
        _refuse_silent_reruns(run_id, at, everything[at:])
    first = events[0]
    source = started_of(first)
    app = runs.loader.graph_for(run_id, record.graph, source.ref, graph)
    new_id = new_run_id or uuid.uuid4().hex
    data = msgspec.structs.replace(
        source,
        forked_from=ForkedFrom(
            run_id,
            at,
            nonce=source.nonce,
            effects="reuse" if effects == "reuse" else None,
            actor=actor,
        ),
        nonce=uuid.uuid4().hex[:16],  # a fork is a new run: a trace of its own
        thread=thread if thread is not None else source.thread,
    )
    copied = [Event(new_id, 1, first.kind, first.ts, data)]
    copied += [Event(new_id, e.seq, e.kind, e.ts, e.data) for e in events[1:]]
    fold = RunFold(app.schema, revive=runs.services.revive)
    for event in copied:
        fold.apply(event)
    durability = record.durability
    services = runs.services
    new_record = RunRecord(
        run_id=new_id,
        graph=app.name,
        thread=data.thread,
        status=RunStatus.RUNNING,
        created_at=copied[-1].ts,
        updated_at=copied[-1].ts,
        durability=durability,
        owner=services.owner,
        lease_until=copied[-1].ts + services.lease_ttl,
        fence=1,
        metadata={**record.metadata, "forked_from": {"run_id": run_id, "seq": at}},
    )
    driver = runs.driver(app, fold, durability)
    driver.prepare_create(new_record, copied)
    if not await driver.create():  # readers of the journal (telemetry) hear all of it
        raise RunStateError(f"run id {new_id!r} is taken; choose another id for the fork")
    if effects == "reuse":
        driver.reuse = reusable_effects(run_id, everything[at:])
    if start and not fold.status.terminal:
        runs.spawn(driver)
    else:
        status = fold.status if fold.status.terminal else RunStatus.INTERRUPTED
        await driver.commit(status)
    return new_id


def _refuse_silent_reruns(run_id: str, at: int, later: list[Event]) -> None:
    """A fork from before recorded side effects must say what to do with them."""
    done = [e.data for e in later if isinstance(e.data, EffectFinished)]
    if not done:
        return
    names = sorted({d.name for d in done})
    shown = ", ".join(repr(n) for n in names[:5]) + (", ..." if len(names) > 5 else "")
    raise RunStateError(
        f"run {run_id!r} made {len(done)} side effects after sequence {at} ({shown}); a fork "
        "from there would make them again: pass effects='rerun' to call them again with new "
        "idempotency keys, or effects='reuse' to take their recorded results where the fork "
        "makes the same call (on the command line: --effects rerun|reuse)"
    )


@dataclass(frozen=True, slots=True)
class Divergence:
    seq: int  # sequence number in the recorded journal where behaviour differs
    expected: str
    actual: str


@dataclass(frozen=True, slots=True)
class ReplayReport:
    run_id: str
    ok: bool
    compared: int  # how many recorded facts matched before the end or the divergence
    divergence: Divergence | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"run {self.run_id}: replay matches the journal ({self.compared} facts compared)"
        d = self.divergence
        assert d is not None
        return (
            f"run {self.run_id}: replay diverges at sequence {d.seq} after {self.compared} matching facts\n"
            f"  recorded: {d.expected}\n  replayed: {d.actual}"
        )


class _JournalOracle:
    """Answers effects and interrupts from the recorded journal instead of running them."""

    def __init__(self, events: list[Event]) -> None:
        self.effects: dict[tuple[int, int, int], EffectFinished] = {}
        self.resumes: dict[str, Any] = {}
        self.updates: dict[tuple[int, int], Any] = {}
        for e in events:
            d = e.data
            if isinstance(d, StepFinished):
                self.updates[(d.step, d.task)] = d.update
            elif isinstance(d, EffectFinished):
                self.effects[(d.step, d.task, d.effect)] = d
            elif isinstance(d, Resumed):
                self.resumes.update(d.values)

    def effect(
        self, driver: ActiveRun, task: TaskRecord, index: int, name: str, fn: Callable[..., Any]
    ) -> Any:
        step = driver.fold.step
        recorded = self.effects.get((step, task.index, index))
        if recorded is None or recorded.name != name:
            found = "nothing" if recorded is None else f"effect {recorded.name!r}"
            raise NondeterminismError(
                f"replay: node {task.node!r} called effect {name!r} (#{index}) at step {step}, "
                f"where the journal has {found}"
            )
        key = f"{driver.run_id}:{step}.{task.index}.{index}"
        driver.record(EffectStarted(step, task.index, task.node, index, name, key, task.attempt))
        driver.record(recorded)
        if recorded.error is not None:
            raise recorded_error(name, recorded.error)
        return revive(fn, None if recorded.result is UNSET else recorded.result)

    def subgraph_update(self, step: int, task: int) -> tuple[bool, Any]:
        """What a subgraph task returned, as recorded: a replay does not run child runs."""
        key = (step, task)
        if key in self.updates:
            return True, self.updates[key]
        return False, None

    def resume_value(self, step: int, task: int, index: int) -> tuple[bool, Any]:
        key = f"{step}.{task}.{index}"
        if key in self.resumes:
            return True, self.resumes[key]
        return False, None


def _facts(events: list[Event], schema: StateSchema[Any]) -> list[tuple[tuple[Any, ...], int, str]]:
    """The behaviour a journal records, in a canonical order: (sort key, seq, description).

    Updates are compared as their declared types (a set is a set, in any order), so a
    journal written by another process, with another iteration order, still matches.
    """
    facts: list[tuple[tuple[Any, ...], int, str]] = []
    for e in events:
        d = e.data
        if isinstance(d, StepFinished):
            update = _canonical(schema.revive_update(to_jsonable(d.update or {})))
            where = f"node {d.node!r} (step {d.step})"
            facts.append(((d.step, d.task, 1, 0), e.seq, f"{where} set {update}"))
        elif isinstance(d, EffectFinished) and d.error is None:
            where = f"node {d.node!r} (step {d.step})"
            facts.append(
                ((d.step, d.task, 0, d.effect), e.seq, f"{where} called effect {d.name!r}")
            )
        elif isinstance(d, Finished | Failed):
            what = "finished" if isinstance(d, Finished) else f"failed: {d.error.type}"
            facts.append(((1 << 30, 0, 0, 0), e.seq, f"the run {what}"))
    # Effect facts of one attempt may repeat across re-runs; keep the last of each key.
    unique = {f[0]: f for f in facts}
    return sorted(unique.values(), key=lambda f: f[0])


async def replay_run(runs: Runs, run_id: str, graph: CompiledGraph | None) -> ReplayReport:
    """Re-run ``run_id`` from its input against its recorded effects and resume values.

    Nothing external runs: effects return what the journal recorded. The report
    names the first recorded fact the graph now fails to reproduce.
    """
    record = await runs.record(run_id)
    recorded = await runs.store.read(run_id)
    first = recorded[0]
    app = runs.loader.graph_for(run_id, record.graph, started_of(first).ref, graph)
    scratch = MemoryStore()
    fold = RunFold(app.schema, revive=runs.services.revive)
    replay_id = f"replay-{run_id}"
    start = Event(replay_id, 1, EventKind.RUN_STARTED, first.ts, first.data)
    await scratch.create_run(
        RunRecord(replay_id, app.name, None, RunStatus.RUNNING, first.ts, first.ts),
        [start],
        Durability.OFF,
    )
    fold.apply(start)
    oracle = _JournalOracle(recorded)
    driver = runs.driver(app, fold, Durability.OFF, oracle=oracle, store=scratch, listeners=[])
    await driver.drive()
    replayed = await scratch.read(replay_id)
    if driver.outcome is not None and replayed[-1].kind not in (
        EventKind.FAILED,
        EventKind.FINISHED,
    ):
        failure = Failed(ErrorInfo(type(driver.outcome).__name__, str(driver.outcome)))
        replayed.append(Event.of(replay_id, len(replayed) + 1, 0.0, failure))
    why = ""
    last = replayed[-1].data
    if isinstance(last, Failed) and recorded[-1].kind is not EventKind.FAILED:
        why = f" ({last.error.summary})"
    expected, actual = _facts(recorded, app.schema), _facts(replayed, app.schema)
    for n, (exp, act) in enumerate(zip(expected, actual, strict=False)):
        if exp[2] != act[2]:
            return ReplayReport(run_id, False, n, Divergence(exp[1], exp[2], act[2] + why))
    if len(expected) != len(actual):
        n = min(len(expected), len(actual))
        exp_desc = expected[n][2] if n < len(expected) else "(nothing more)"
        act_desc = (actual[n][2] if n < len(actual) else "(nothing more)") + why
        seq = expected[n][1] if n < len(expected) else recorded[-1].seq
        return ReplayReport(run_id, False, n, Divergence(seq, exp_desc, act_desc))
    return ReplayReport(run_id, True, len(expected))


def _canonical(value: Any) -> Any:
    """``value`` with its sets as sorted lists: the same facts describe themselves alike."""
    if isinstance(value, set | frozenset):
        return sorted((_canonical(v) for v in value), key=repr)
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value
