"""Subgraphs as nodes: a child run with its own state and journal, driven inside the parent's task.

The child's run id is derived from the parent task (``parent/node.step.task``),
so a resumed parent finds its child's journal and resumes it instead of
starting over. A child that parks on interrupts parks its parent task with one
parent interrupt per child interrupt; resume values flow back down.

Drivers reach this runner through their services (``EngineServices.subgraphs``),
never by import: it makes drivers itself, so it sits above them.
"""

from __future__ import annotations

from typing import Any

import anyio

from ..errors import RunFailedError, RunStateError
from ..events import Interrupted, ParentRef, Resumed, RunStarted
from ..graph.compiled import CompiledGraph, NodeSpec
from ..status import RunStatus
from .context import Parked
from .driver import RunDriver
from .fold import NO_ARG, RunFold, TaskRecord
from .journal import STOPS_DRIVING
from .runs import Runs
from .seams import ActiveRun


class Subgraphs:
    """The ``SubgraphRunner`` of one runtime: drives child runs for their parents."""

    def __init__(self, runs: Runs) -> None:
        self.runs = runs

    async def __call__(
        self, parent: ActiveRun, spec: NodeSpec, task: TaskRecord, state_in: Any
    ) -> Any:
        child_app = spec.subgraph
        assert child_app is not None
        step = parent.fold.step
        child_id = f"{parent.run_id}/{task.node}.{step}.{task.index}"
        if task.attempt > 1:
            child_id += f".a{task.attempt}"
        if spec.subgraph_input is not None:
            child_input = spec.subgraph_input(state_in)
        elif task.arg is not NO_ARG:
            child_input = state_in
        else:
            fields = child_app.schema.fields
            child_input = {k: v for k, v in parent.fold.state.items() if k in fields}
        if parent.oracle is not None:  # replay: the child's outcome comes from the journal
            found, update = parent.oracle.subgraph_update(step, task.index)
            if not found:
                raise Parked()
            return update
        driver = await self._child_driver(parent, child_app, child_id, task, child_input)
        driver.nested = True  # driven in the parent's task, under its scopes: commits shielded
        _forward_resumes(driver, task)
        if not driver.fold.status.terminal:
            await self._drive(parent, driver)
        return _child_result(parent, spec, task, child_app, child_id, driver.fold)

    async def _drive(self, parent: ActiveRun, driver: RunDriver) -> None:
        registry = self.runs.registry
        registry.add(driver)
        try:
            await driver.drive()
        except anyio.get_cancelled_exc_class():
            # The parent was cancelled or failed: the child ends too. (A runtime shutting
            # down leaves both as they are, resumable.)
            if parent.cancel_requested or parent.failed:
                with anyio.CancelScope(shield=True):
                    await driver.end_cancelled("its parent run ended")
            raise
        finally:
            registry.forget(driver)
        if isinstance(driver.outcome, STOPS_DRIVING):
            parent.stop(driver.outcome)  # the child's store failed: so does the parent's
        if driver.outcome is not None:
            raise driver.outcome

    async def _child_driver(
        self,
        parent: ActiveRun,
        app: CompiledGraph,
        child_id: str,
        task: TaskRecord,
        child_input: Any,
    ) -> RunDriver:
        """The child run's driver: a new run the first time, its journal's fold afterwards."""
        runs = self.runs
        if parent.creation_pending:  # Runtime.run deferred the parent's creation: it goes
            await parent.commit()  # first, so no child ever points at a run that is not there
        grand = parent.fold.parent
        # The child acts for the same tenant and user: budgets, caches and metrics scope its
        # effects as its parent's.
        metadata = dict(parent.fold.metadata) or None
        data = RunStarted(
            app.name,
            app.fingerprint,
            child_input,
            str(parent.durability),
            thread=parent.fold.thread,
            metadata=metadata,
            parent=ParentRef(
                parent.run_id,
                grand.root if grand is not None else parent.run_id,
                parent.fold.step,
                task.index,
                task.node,
                root_nonce=grand.root_nonce if grand is not None else parent.fold.nonce,
            ),
        )
        driver = await runs.create(
            app,
            child_id,
            data,
            parent.durability,
            parent_run_id=parent.run_id,
            metadata=metadata,
        )
        if driver is not None:
            return driver
        # The child's lease follows its parent's: the parent's driver is the only one to drive it.
        return await runs.claimed(
            app,
            child_id,
            parent.durability,
            busy=f"subgraph run {child_id!r} is being driven by another process; its parent "
            f"{parent.run_id!r} cannot go on here",
        )


def _forward_resumes(driver: RunDriver, task: TaskRecord) -> None:
    """Resume values given to the parent's stand-in interrupts go down to the child."""
    fold = driver.fold
    forwarded = {
        i.child: i.value
        for i in task.interrupts.values()
        if i.resumed
        and i.child
        and (rec := fold.find_interrupt(i.child)) is not None
        and not rec.resumed
    }
    if forwarded:
        driver.record(Resumed(forwarded))


def _child_result(
    parent: ActiveRun,
    spec: NodeSpec,
    task: TaskRecord,
    child_app: CompiledGraph,
    child_id: str,
    fold: RunFold,
) -> Any:
    """The parent task's update once the child run stopped, or Parked for its interrupts."""
    if fold.status is RunStatus.FINISHED:
        output = child_app.schema.output(fold.state)
        if spec.subgraph_output is not None:
            return spec.subgraph_output(output)
        return {k: v for k, v in fold.state.items() if k in parent.fold.schema.fields}
    if fold.status is RunStatus.FAILED:
        raise RunFailedError(child_id, fold.error.as_dict() if fold.error else {})
    if fold.status is RunStatus.CANCELLED:
        if parent.cancel_requested or parent.abandoned:
            raise Parked()  # the parent is stopping too: its loop ends it as asked
        raise RunStateError(f"subgraph run {child_id!r} was cancelled")
    step = parent.fold.step
    mapped = {i.child for i in task.interrupts.values() if i.child}
    for child_task, interrupt in fold.pending_interrupts:
        if interrupt.id in mapped:
            continue
        index = len(task.interrupts)
        parent.record(
            Interrupted(
                step,
                task.index,
                task.node,
                index,
                f"{step}.{task.index}.{index}",
                interrupt.payload,
                child=interrupt.id,
                child_run=child_id,
                child_node=child_task.node,
            )
        )
    raise Parked()
