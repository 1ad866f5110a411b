"""The superstep loop: drives one run forward from wherever its journal stands.

A fresh run and a resumed one take the same path: the fold says which step the
run is in and which tasks are unfinished; the driver runs those, records what
they did, and plans the next step. Commit points:

* at each step boundary, the finished step and the next step's plan are
  committed together before any task of the next step runs;
* after each effect, so a finished effect is never repeated;
* when the run parks on interrupts, and when it ends.

A new run is created with its start and first plan in one commit; a run of
``Runtime.run`` without a chosen id is created by its first commit instead.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import traceback
from collections.abc import Callable
from contextlib import nullcontext, suppress
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from anyio import CancelScope

from ..errors import (
    ConflictError,
    GraphError,
    MainspringError,
    NodeTimeoutError,
    NondeterminismError,
    SerializationError,
    StateError,
    StoreError,
)
from ..events import Event, EventKind, encode
from ..graph.builder import NodeSpec
from ..graph.compiled import CompiledGraph
from ..graph.types import END, START, Send
from ..store.base import Durability, RunRecord, RunStatus, Store
from ._tasks import cancel_scope
from .context import Context, Parked
from .fold import NO_ARG, RunFold, TaskRecord
from .journal import AppendNow, Listener, RunJournal

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("mainspring.runtime")

# Errors that retrying cannot fix: the graph or its data is wrong.
_NOT_RETRYABLE = (GraphError, StateError, SerializationError, NondeterminismError)


class ReplayOracle(Protocol):
    def effect(
        self, driver: RunDriver, task: TaskRecord, index: int, name: str, fn: Callable[..., Any]
    ) -> Any: ...
    def resume_value(self, step: int, task: int, index: int) -> tuple[bool, Any]: ...
    def subgraph_update(self, step: int, task: int) -> tuple[bool, Any]: ...


class RunDriver(RunJournal):
    """Drives one run: runs its tasks, plans its steps, and says when to commit."""

    __slots__ = (
        "_cancel_held",
        "_done",
        "_failure",
        "_fresh",
        "_joins",
        "_snapshot_every",
        "_step_scope",
        "_stopped",
        "abandoned",
        "app",
        "cancel_requested",
        "oracle",
        "outcome",
        "own_task",
        "parked",
        "scope",
    )

    def __init__(
        self,
        runtime: Runtime,
        app: CompiledGraph,
        fold: RunFold,
        *,
        store: Store,
        durability: Durability,
        check_json: bool,
        snapshot_every: int,
        listeners: list[Listener],
        oracle: ReplayOracle | None = None,
        append_now: AppendNow | None = None,
    ) -> None:
        super().__init__(
            runtime,
            fold,
            store=store,
            durability=durability,
            check_json=check_json,
            listeners=listeners,
            append_now=append_now,
        )
        self.app = app
        self.oracle = oracle
        self._snapshot_every = snapshot_every
        self._fresh = False  # the current step was planned by this driver and has not run yet
        self._failure: dict[str, Any] | None = None
        self._step_scope: CancelScope | None = None
        self.scope: CancelScope | None = None  # the run's own: cancel and abandon use it
        self._cancel_held = False  # a cancel waits for the append in flight
        self.own_task = False  # driven in a task of its own (RunTasks): no caller's scopes
        self.cancel_requested = False
        self.abandoned = False  # the runtime is closing: stop, leave the run resumable
        self.parked = False
        self.outcome: BaseException | None = None  # set when the driver stopped on an error
        self._stopped = False
        # Made when first waited on. asyncio's own Event: anyio's costs a sniffio lookup
        # more (~1.5 us a run), and the runtime runs on asyncio (see _tasks.py).
        self._done: asyncio.Event | None = None
        self._joins: dict[str, list[str]] | None = None

    # -- the loop ------------------------------------------------------------------

    def begin(self, started: Event, record: RunRecord) -> None:
        """Prepare a new run: its start and first step's plan, to be created in one commit."""
        self._create_record = record
        self.run_id = started.run_id
        self.fold.apply(started)
        self._pending.append(started)
        self._stored_status = RunStatus.RUNNING
        try:
            plan = self._plan()
        except (GraphError, StateError):
            return  # the loop plans again and records the failure in the journal
        if plan:
            self._announce(plan)

    async def drive(self) -> None:
        """Run until the run finishes, fails, parks or is cancelled."""
        try:
            # A new run in batch or off mode is created here, before the run's scope
            # exists: a cancel asked meanwhile takes effect once it does. The caller's
            # scopes (Runtime.run) must not interrupt it either.
            if self._create_record is not None and not self._defer_create:
                with nullcontext() if self.own_task else cancel_scope(shield=True):
                    created = await self.create()
                if not created:
                    return  # the run already existed: whoever made it drives it
            with cancel_scope() as scope:
                self.scope = scope
                if self._stopping():
                    scope.cancel()
                await self._loop()
            if (scope.cancelled_caught or self.cancel_requested) and not self.abandoned:
                await self.end_cancelled("cancelled by request")
        except ConflictError as exc:
            self.outcome = exc  # another writer drives this run now; stop quietly
        except MainspringError as exc:
            self.outcome = exc  # the store failed: the journal stays as it was, resumable
        except Exception as exc:  # a bug of ours: record it rather than take the runtime down
            self.outcome = exc
            with suppress(Exception):
                await self._end(
                    EventKind.FAILED,
                    {"error": _describe(exc, "", self.fold.step, -1, 0)},
                    RunStatus.FAILED,
                )
        finally:
            self._stopped = True
            if self._done is not None:
                self._done.set()
            if not self.nested:  # a subgraph's run is its parent's to wind up (run_subgraph)
                self.runtime._driver_stopped(self)
                if (
                    self.fold.status is RunStatus.RUNNING
                    and not self.parked
                    and self.outcome is None
                    and self.existing is None
                    and not self.creation_pending  # never stored: no lease to hand back
                ):
                    # Abandoned mid-run (shutdown, or a cancelled caller of Runtime.run):
                    # hand the lease back so another process can take the run over at once.
                    await self._release()

    async def _release(self) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await self.store.release(self.run_id, self.runtime.owner)
            except StoreError as exc:
                log.warning("could not release run %s: %s", self.run_id, exc)

    @property
    def stopped(self) -> bool:
        """The driver has stopped (``done`` is, or would be, set)."""
        return self._stopped

    @property
    def done(self) -> asyncio.Event:
        """Set once the driver has stopped (finished, failed, parked, cancelled or abandoned)."""
        if self._done is None:
            self._done = asyncio.Event()
            if self._stopped:
                self._done.set()
        return self._done

    async def _loop(self) -> None:
        fold = self.fold
        if fold.status.terminal:
            return
        broken = next((t for t in fold.tasks if t.error is not None), None)
        if broken is not None:  # failed for good before a crash could record the run's end
            await self._end(EventKind.FAILED, {"error": broken.error}, RunStatus.FAILED)
            return
        while True:
            if self.cancel_requested or self.abandoned:  # checked at every step boundary
                return
            if fold.closed or fold.step_complete:
                try:
                    plan = self._plan()
                except (GraphError, StateError) as exc:  # a router failed, or updates collided
                    await self._fail_run(exc)
                    return
                if not plan:
                    await self._end(EventKind.FINISHED, {}, RunStatus.FINISHED)
                    return
                self._announce(plan)
                if self._append_now is not None:  # in memory: no coroutine to make and await
                    self._commit_now(self._append_now, RunStatus.RUNNING, None)
                else:
                    await self.commit(RunStatus.RUNNING, shield=self._loop_shield())
                if self._stopping():  # asked while we committed
                    return
                if self._snapshot_due:
                    await self.maybe_snapshot()
            fresh, self._fresh = self._fresh, False
            tasks = fold.tasks if fresh else [t for t in fold.tasks if t.runnable]
            if tasks:
                if len(tasks) == 1:
                    await self._run_task(tasks[0], fresh)
                else:
                    await self._run_tasks(tasks, fresh)
                if self._failure is not None:
                    await self._end(EventKind.FAILED, {"error": self._failure}, RunStatus.FAILED)
                    return
                continue
            # Parked: every open task waits on a human. A resume may land while we commit.
            await self.commit(RunStatus.INTERRUPTED, shield=self._loop_shield())
            if not any(t.runnable for t in fold.tasks):
                self.parked = True
                return

    def _plan(self) -> list[tuple[str, Any]]:
        fold = self.fold
        app = self.app
        if not fold.closed:
            fold.close_step()
        tasks = fold.tasks
        source = START if fold.step == -1 else tasks[0].node if len(tasks) == 1 else None
        if source is not None and not app.joins and source not in app.branches:
            # One node, static edges only: the common linear case.
            targets = app.static.get(source, ())
            if len(targets) == 1:
                return [] if targets[0] == END else [(targets[0], NO_ARG)]
            return [(t, NO_ARG) for t in targets if t != END]
        sources = [START] if fold.step == -1 else [t.node for t in tasks]
        view = fold.schema.view(fold.state) if app.branches else None
        plan: list[tuple[str, Any]] = []
        seen: set[str] = set()
        for source in sources:
            for target in app.successors(source, view):
                if isinstance(target, Send):
                    plan.append((target.node, target.arg))
                elif target != END and target not in seen:
                    seen.add(target)
                    plan.append((target, NO_ARG))
        if app.joins:
            done = set(sources)
            progress = {k: set(v) for k, v in fold.joins.items()}
            for join in app.joins:
                key = "+".join(sorted(join.sources)) + ">" + join.target
                have = progress.setdefault(key, set()) | (done & join.sources)
                if have >= join.sources:
                    have = set()
                    if join.target != END and join.target not in seen:
                        seen.add(join.target)
                        plan.append((join.target, NO_ARG))
                progress[key] = have
            self._joins = {k: sorted(v) for k, v in progress.items()}
        return plan

    def _announce(self, plan: list[tuple[str, Any]]) -> None:
        step = self.fold.step + 1
        joins = self._joins
        for index, (node, arg) in enumerate(plan):
            data: dict[str, Any] = {"step": step, "task": index, "node": node}
            if arg is not NO_ARG:
                self.check_json(arg, f"the Send payload for node {node!r}")
                data["arg"] = arg
            if index == 0 and joins is not None:
                data["joins"] = joins
            self.record(EventKind.STEP_STARTED, data)
        self._fresh = True
        if self._snapshot_every and step and step % self._snapshot_every == 0:
            self._snapshot_due = True

    async def _run_tasks(self, tasks: list[TaskRecord], fresh: bool) -> None:
        async with anyio.create_task_group() as tg:
            self._step_scope = tg.cancel_scope
            for task in tasks:
                tg.start_soon(self._run_task, task, fresh)
        self._step_scope = None

    async def _run_task(self, task: TaskRecord, fresh: bool) -> None:
        spec = self.app.nodes[task.node]
        step = self.fold.step
        if not fresh:
            self.record(
                EventKind.STEP_STARTED,
                {
                    "step": step,
                    "task": task.index,
                    "node": task.node,
                    "attempt": task.attempt,
                    "rerun": True,
                },
            )
        fold = self.fold
        inline = spec.inline
        while True:
            try:
                if inline:  # no timeout, no thread: call it here, no coroutine layers
                    state_in = task.arg if task.arg is not NO_ARG else fold.schema.view(fold.state)
                    fn: Callable[..., Any] = spec.fn  # type: ignore[assignment]
                    if spec.is_async:
                        result = await (
                            fn(state_in, Context(self, task)) if spec.wants_ctx else fn(state_in)
                        )
                    else:
                        result = (
                            fn(state_in, Context(self, task)) if spec.wants_ctx else fn(state_in)
                        )
                        if (
                            result is not None
                            and type(result) is not dict
                            and inspect.isawaitable(result)
                        ):
                            result = await result  # a sync callable that returned a coroutine
                    update = self._update_of(task, result)
                else:
                    update = await self._attempt(spec, task)
            except Parked:
                return
            except Exception as exc:
                if (
                    isinstance(exc, TimeoutError)
                    and not isinstance(exc, NodeTimeoutError)
                    and spec.timeout
                ):
                    exc = NodeTimeoutError(
                        f"node {task.node!r} ran longer than its timeout of {spec.timeout} s "
                        f"(attempt {task.attempt})"
                    )
                retry = (
                    spec.retry is not None
                    and not isinstance(exc, _NOT_RETRYABLE)
                    and spec.retry.retries(exc)
                    and task.attempt < spec.retry.attempts
                )
                error = _describe(exc, task.node, step, task.index, task.attempt)
                delay = spec.retry.delay(task.attempt) if retry and spec.retry else 0.0
                self.record(
                    EventKind.STEP_FAILED,
                    {
                        "step": step,
                        "task": task.index,
                        "node": task.node,
                        "attempt": task.attempt,
                        "error": error,
                        "retry": retry,
                        "delay": delay,
                    },
                )
                if not retry:
                    self._fail(error)
                    return
                await self.commit()
                await anyio.sleep(delay)
                self.record(
                    EventKind.STEP_STARTED,
                    {
                        "step": step,
                        "task": task.index,
                        "node": task.node,
                        "attempt": task.attempt + 1,
                    },
                )
                continue
            self.record(
                EventKind.STEP_FINISHED,
                {"step": step, "task": task.index, "node": task.node, "update": update},
            )
            return

    async def _attempt(self, spec: NodeSpec, task: TaskRecord) -> Any:
        fold = self.fold
        state_in = task.arg if task.arg is not NO_ARG else fold.schema.view(fold.state)
        with anyio.fail_after(spec.timeout) if spec.timeout else nullcontext():
            result = await self._call(spec, task, state_in)
            if inspect.isawaitable(result):
                result = await result
        return self._update_of(task, result)

    def _update_of(self, task: TaskRecord, result: Any) -> Any:
        """What a node returned, checked against the schema (and as JSON, on durable stores)."""
        update = self.fold.schema.check_update(task.node, result)
        if update and self._check_json:
            encode(update, what=f"the update returned by node {task.node!r}")
        return update

    async def _call(self, spec: NodeSpec, task: TaskRecord, state_in: Any) -> Any:
        fn: Callable[..., Any] = spec.fn  # type: ignore[assignment]
        if spec.is_async:
            return await (fn(state_in, Context(self, task)) if spec.wants_ctx else fn(state_in))
        if spec.subgraph is not None:
            from .subgraph import run_subgraph

            return await run_subgraph(self, spec, task, state_in)
        if spec.blocking:
            args = (state_in, Context(self, task)) if spec.wants_ctx else (state_in,)
            return await anyio.to_thread.run_sync(fn, *args)
        return fn(state_in, Context(self, task)) if spec.wants_ctx else fn(state_in)

    async def _fail_run(self, exc: BaseException) -> None:
        tasks = self.fold.tasks
        node = ",".join(t.node for t in tasks) or START
        await self._end(
            EventKind.FAILED,
            {"error": _describe(exc, node, self.fold.step, -1, 0)},
            RunStatus.FAILED,
        )

    def _fail(self, error: dict[str, Any]) -> None:
        if self._failure is None:
            self._failure = error
            if self._step_scope is not None:
                self._step_scope.cancel()  # the run has failed: stop its siblings

    async def _end(self, kind: EventKind, data: dict[str, Any], status: RunStatus) -> None:
        self.record(kind, data)
        error = None
        if kind is EventKind.FAILED:
            err = data["error"]
            error = f"{err.get('type')}: {err.get('message')}"
        # Ends are committed by the loop or after it: the driver's own commits (see commit).
        await self.commit(status, error, shield=self._loop_shield())

    @property
    def failed(self) -> bool:
        """A task of the current step failed for good (the run is failing)."""
        return self._failure is not None

    async def end_cancelled(self, reason: str) -> None:
        """Record that the run was cancelled, unless it already ended."""
        if not self.fold.status.terminal:
            await self._end(EventKind.CANCELLED, {"reason": reason}, RunStatus.CANCELLED)

    def request_cancel(self) -> None:
        self.cancel_requested = True
        self._cancel_scope()

    def abandon(self) -> None:
        """Stop driving at the next await; the journal stays as it is, resumable."""
        self.abandoned = True
        self._cancel_scope()

    def _cancel_scope(self) -> None:
        if self._committing:
            self._cancel_held = True  # never interrupt an append: we would not know if it landed
        elif self.scope is not None:
            self.scope.cancel()

    def _release_held_cancel(self) -> None:
        if self._cancel_held and self.scope is not None:
            self._cancel_held = False
            self.scope.cancel()

    def _loop_shield(self) -> bool:
        """Whether a commit of the loop needs an anyio shield.

        Not in a task of its own, where only the run's scope encloses the loop,
        unless that scope is (about to be) cancelled: a cancel or abandon asked
        before the commit starts would interrupt it; one asked during it is held.
        """
        return not self.own_task or self.cancel_requested or self.abandoned

    def _stopping(self) -> bool:
        return self.cancel_requested or self.abandoned


def _describe(exc: BaseException, node: str, step: int, task: int, attempt: int) -> dict[str, Any]:
    tb = "".join(traceback.format_exception(exc))
    if len(tb) > 8000:
        tb = tb[:2000] + "\n...\n" + tb[-6000:]
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "node": node,
        "step": step,
        "task": task,
        "attempt": attempt,
        "traceback": tb,
    }
