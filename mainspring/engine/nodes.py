"""Running a step's tasks: call each node, check what it returns, retry failed attempts.

A node is called in the cheapest way its spec allows: inline (no timeout, no thread:
no coroutine layers), under a timeout, in a worker thread (``blocking``, or a sync node
with a timeout, so the timeout can hold), or as a subgraph (a child run driven in the
parent's task). A failed attempt is recorded, with its retry decision and backoff; a
task that fails for good fails the run and stops its siblings in the step.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from typing import Any

import anyio

from ..errors import (
    EffectDeniedError,
    GraphError,
    NodeTimeoutError,
    NondeterminismError,
    SerializationError,
    StateError,
)
from ..events import ErrorInfo, StepFailed, StepFinished, StepStarted
from ..graph.compiled import NodeSpec
from ._threads import call_in_thread
from .context import Context, Parked
from .fold import NO_ARG, TaskRecord
from .journal import Stopped
from .seams import ActiveRun

# Errors that retrying cannot fix: the graph or its data is wrong.
_NOT_RETRYABLE = (
    GraphError,
    StateError,
    SerializationError,
    NondeterminismError,
    EffectDeniedError,
)


async def run_tasks(run: ActiveRun, tasks: list[TaskRecord], fresh: bool) -> None:
    """The tasks of one step, concurrently; a task that fails for good cancels the rest."""
    async with anyio.create_task_group() as tg:
        run.step_scope = tg.cancel_scope
        for task in tasks:
            tg.start_soon(run_task, run, task, fresh)
    run.step_scope = None


async def run_task(run: ActiveRun, task: TaskRecord, fresh: bool) -> None:
    """One task to its end: finished, parked, failed for good, or stopped with the run.

    ``fresh``: the task was planned by this driver and has not run yet (its start is
    already recorded); otherwise it is run again after a resume, and says so.
    """
    spec = run.app.nodes[task.node]
    fold = run.fold
    step = fold.step
    if not fresh:
        _record_start(run, task, task.attempt, rerun=True)
    inline = spec.inline
    while True:
        try:
            if inline:  # no timeout, no thread: call it here, no coroutine layers
                state_in = task.arg if task.arg is not NO_ARG else fold.schema.view(fold.state)
                fn: Callable[..., Any] = spec.fn  # type: ignore[assignment]
                if spec.is_async:
                    result = await (
                        fn(state_in, Context(run, task)) if spec.wants_ctx else fn(state_in)
                    )
                else:
                    result = fn(state_in, Context(run, task)) if spec.wants_ctx else fn(state_in)
                    if (
                        result is not None
                        and type(result) is not dict
                        and inspect.isawaitable(result)
                    ):
                        result = await result  # a sync callable that returned a coroutine
                update = update_of(run, task, result)
            else:
                update = await _attempt(run, spec, task)
        except Parked:
            return
        except Stopped:  # a commit stopped the driver: the others of this step stop too
            _stop_step(run)
            return
        except Exception as exc:
            try:
                retried = await _attempt_failed(run, spec, task, step, exc)
            except Stopped:
                _stop_step(run)
                return
            if not retried:
                return
            _record_start(run, task, task.attempt + 1)
            continue
        if run.outcome is not None:  # the node swallowed a Stopped: record nothing more
            return
        run.record(StepFinished(step, task.index, task.node, update))
        return


def update_of(run: ActiveRun, task: TaskRecord, result: Any) -> Any:
    """What a node returned, checked against the schema (and its round trip through the
    journal, on durable stores)."""
    schema = run.fold.schema
    update = schema.check_update(task.node, result)
    if update and run.checks_values:
        schema.check_roundtrip(task.node, update)
    return update


def describe(exc: BaseException, node: str, step: int, task: int, attempt: int) -> ErrorInfo:
    """An error as the journal keeps it, its traceback trimmed to 8 KB."""
    tb = "".join(traceback.format_exception(exc))
    if len(tb) > 8000:
        tb = tb[:2000] + "\n...\n" + tb[-6000:]
    return ErrorInfo(type(exc).__name__, str(exc), None, node, step, task, attempt, tb)


def _stop_step(run: ActiveRun) -> None:
    if run.step_scope is not None:
        run.step_scope.cancel()


def _record_start(run: ActiveRun, task: TaskRecord, attempt: int, *, rerun: bool = False) -> None:
    run.record(StepStarted(run.fold.step, task.index, task.node, attempt, rerun=rerun))


async def _attempt_failed(
    run: ActiveRun, spec: NodeSpec, task: TaskRecord, step: int, exc: Exception
) -> bool:
    """Record a failed attempt; True if the task is retried (after its backoff)."""
    if isinstance(exc, TimeoutError) and not isinstance(exc, NodeTimeoutError) and spec.timeout:
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
    error = describe(exc, task.node, step, task.index, task.attempt)
    delay = spec.retry.delay(task.attempt) if retry and spec.retry else 0.0
    run.record(StepFailed(step, task.index, task.node, task.attempt, error, retry, delay))
    if not retry:
        run.fail(error)
        return False
    await run.commit()
    await anyio.sleep(delay)
    return True


async def _attempt(run: ActiveRun, spec: NodeSpec, task: TaskRecord) -> Any:
    fold = run.fold
    state_in = task.arg if task.arg is not NO_ARG else fold.schema.view(fold.state)
    with anyio.fail_after(spec.timeout) if spec.timeout else nullcontext():
        result = await _call(run, spec, task, state_in)
        if inspect.isawaitable(result):
            result = await result
    return update_of(run, task, result)


async def _call(run: ActiveRun, spec: NodeSpec, task: TaskRecord, state_in: Any) -> Any:
    fn: Callable[..., Any] = spec.fn  # type: ignore[assignment]
    if spec.is_async:
        return await (fn(state_in, Context(run, task)) if spec.wants_ctx else fn(state_in))
    if spec.subgraph is not None:
        return await run.services.subgraphs(run, spec, task, state_in)
    args = (state_in, Context(run, task)) if spec.wants_ctx else (state_in,)
    if spec.blocking or spec.timeout:  # in a thread, so that the timeout can hold
        where = {"step": run.fold.step, "task": task.index, "node": task.node}
        late = partial(run.record_late, {**where, "attempt": task.attempt})
        # A cancel or shutdown waits for the thread (its effects get journaled); a
        # timeout abandons it (its late result is recorded as discarded).
        return await call_in_thread(partial(fn, *args), late, run.stopping)
    return fn(*args)
