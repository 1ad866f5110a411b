"""The superstep loop: drives one run forward from wherever its journal stands.

A fresh run and a resumed one take the same path: the fold says which step the
run is in and which tasks are unfinished; the driver runs those (``nodes.py``),
records what they did, and plans the next step (``planner.py``). Commit points:

* at each step boundary, the finished step and the next step's plan are
  committed together before any task of the next step runs;
* after each effect, so a finished effect is never repeated;
* when the run parks on interrupts, and when it ends.

A new run is created with its start and first plan in one commit; a run of
``Runtime.run`` without a chosen id is created by its first commit instead.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from contextlib import nullcontext, suppress
from typing import Any

import anyio
from anyio import CancelScope

from ..errors import (
    GraphError,
    LeaseLostError,
    MainspringError,
    StateError,
    StoreError,
)
from ..events import (
    Cancelled,
    Discarded,
    ErrorInfo,
    Event,
    Failed,
    Finished,
    StepStarted,
    error_info,
    jsonable_or_repr,
)
from ..graph.compiled import CompiledGraph
from ..graph.types import START
from ..status import FINISHED, RUNNING, Durability, RunStatus
from ..store import RunRecord, Store
from ._tasks import cancel_scope
from .fold import NO_ARG, RunFold
from .journal import STOPS_DRIVING, RunJournal, Stopped
from .nodes import describe, run_task, run_tasks
from .planner import next_step
from .seams import AppendNow, EngineServices, Listener, ReplayOracle

log = logging.getLogger("mainspring.runtime")


class RunDriver(RunJournal):
    """Drives one run: runs its tasks, plans its steps, and says when to commit."""

    __slots__ = (
        "_cancel_held",
        "_done",
        "_failure",
        "_fresh",
        "_joins",
        "_snapshot_every",
        "_stopped",
        "abandoned",
        "app",
        "cancel_actor",
        "cancel_requested",
        "gate",
        "loop_thread",
        "oracle",
        "own_task",
        "parked",
        "reuse",
        "scope",
        "step_scope",
        "winding_up",
    )

    def __init__(
        self,
        services: EngineServices,
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
            services,
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
        self._failure: ErrorInfo | None = None
        self.step_scope: CancelScope | None = None  # the current step's, while its tasks run
        self.scope: CancelScope | None = None  # the run's own: cancel and abandon use it
        self._cancel_held = False  # a cancel waits for the append in flight
        self.own_task = False  # driven in a task of its own (RunTasks): no caller's scopes
        self.cancel_requested = False
        self.cancel_actor: str | None = None  # who asked for the cancel, when named
        self.abandoned = False  # the runtime is closing: stop, leave the run resumable
        self.parked = False
        self._stopped = False
        self.winding_up = False  # stopping: takes no more work (``done`` follows shortly)
        # Made when first waited on. asyncio's own Event: anyio's costs a sniffio lookup
        # more (~1.5 us a run), and the runtime runs on asyncio (see _tasks.py).
        self._done: asyncio.Event | None = None
        self._joins: dict[str, list[str]] | None = None
        self.loop_thread = threading.get_ident()  # drivers are made on the event loop
        self.gate = services.gate  # every effect of the run passes its hooks
        # A fork's effects answered from the run it was forked from (effects="reuse"):
        # (step, task, effect) -> {name, key, result, origin}.
        self.reuse: dict[tuple[int, int, int], dict[str, Any]] | None = None

    # -- the loop ------------------------------------------------------------------

    def begin(self, started: Event, record: RunRecord) -> None:
        """Prepare a new run: its start and first step's plan, to be created in one commit."""
        self._create_record = record
        self.run_id = started.run_id
        self.fence = record.fence
        self.lease_valid_until = time.monotonic() + self.services.lease_ttl
        self.fold.apply(started)
        self._pending.append(started)
        self._stored_status = RUNNING
        try:
            plan, self._joins = next_step(self.app, self.fold)
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
                # A store that appends without waiting creates without waiting too (in
                # memory): nothing suspends, so no scope can interrupt the creation and a
                # shield (an anyio scope) would only cost: ~18k instructions a run (callgrind, W12).
                unshielded = self.own_task or self._append_now is not None
                with nullcontext() if unshielded else cancel_scope(shield=True):
                    created = await self.create()
                if not created:
                    return  # the run already existed: whoever made it drives it
            with cancel_scope() as scope:
                self.scope = scope
                if self.stopping():
                    scope.cancel()
                await self._loop()
            if (
                (scope.cancelled_caught or self.cancel_requested)
                and not self.abandoned
                and self.outcome is None
            ):
                await self.end_cancelled("cancelled by request")
        except Stopped:
            pass  # the store failed, or another process took the run: ``outcome`` says which
        except MainspringError as exc:
            # The store failed (creating the run, or an in-memory append that found the run
            # taken): the journal stays as it was, resumable.
            self.outcome = exc
        except Exception as exc:  # a bug of ours: record it rather than take the runtime down
            self.outcome = exc
            with suppress(Exception):
                await self._end(Failed(describe(exc, "", self.fold.step, -1, 0)), RunStatus.FAILED)
        finally:
            self.winding_up = True
            if self.holds_lease():
                # Abandoned mid-run (shutdown, or a cancelled caller of Runtime.run), or
                # stopped by its store: hand the lease back so that another process (or
                # this one's recovery, once the store works again) takes the run over now.
                # Before anyone learns the driver stopped: what they see then is settled.
                await self.release()
            self._stopped = True
            if self._done is not None:
                self._done.set()
            if not self.nested:  # a subgraph's run is its parent's to wind up (run_subgraph)
                self.services.registry.stopped(self)

    def holds_lease(self) -> bool:
        """Stopped with the run still running in the store, and its lease ours to give back."""
        stored = self._stored_status if self._stored_status is not None else self.fold.status
        return (
            stored is RUNNING
            and not self.parked
            and self.existing is None
            and not self.creation_pending  # never stored: no lease to hand back
            and (self.outcome is None or isinstance(self.outcome, STOPS_DRIVING))
            and not isinstance(self.outcome, LeaseLostError)  # someone else's now
        )

    async def release(self) -> None:
        """Give the run's lease back, best effort: a store that cannot take it now gets it
        from the runtime's heartbeat later (meanwhile its renewals skip this run)."""
        services = self.services
        with anyio.CancelScope(shield=True), anyio.move_on_after(services.release_timeout):
            try:
                await self.store.release(self.run_id, services.owner)
                return
            except StoreError as exc:
                log.warning("could not release run %s now (%s); will retry", self.run_id, exc)
        services.registry.unreleased.add(self.run_id)  # the heartbeat tries again

    def lease_fresh(self) -> bool:
        """Whether ``ensure_lease`` has nothing to do now (its checks without a coroutine:
        an effect asks before every call)."""
        return (
            self.fence is None
            or self._create_record is not None  # creation_pending, without a property call
            or self.oracle is not None
            or time.monotonic() < self.lease_valid_until
        )

    async def ensure_lease(self) -> None:
        """Before an effect acts: make sure this process still holds the run.

        Free while renewals keep the lease in an unbroken chain. After a gap (the
        process froze, the store was unreachable) the lease may have been taken over,
        and another process may have done this very effect: look in the store first,
        and stop if the run is no longer ours.
        """
        if self.fence is None or self.creation_pending or self.oracle is not None:
            return
        if time.monotonic() < self.lease_valid_until:
            return
        rt = self.services
        started = time.monotonic()
        try:
            # Still ours, or free and untouched since (same token): renewed, token kept.
            fence = await self.store.claim(self.run_id, rt.owner, rt.lease_ttl, fence=self.fence)
        except STOPS_DRIVING as exc:
            self.stop(exc)
        if fence != self.fence:
            if fence is not None:  # someone held it meanwhile, then let it go: not ours now
                await self.release()
            self.stop(LeaseLostError(self.run_id, self.fence, fence, None))
        self.lease_valid_until = started + rt.lease_ttl

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
            assert broken.error is not None
            await self._end(Failed(broken.error), RunStatus.FAILED)
            return
        while True:
            if self.cancel_requested or self.abandoned:  # checked at every step boundary
                return
            if fold.closed or fold.step_complete:
                try:
                    plan, self._joins = next_step(self.app, self.fold)
                except (GraphError, StateError) as exc:  # a router failed, or updates collided
                    await self._fail_run(exc)
                    return
                if not plan:
                    await self._end(Finished(), FINISHED)
                    return
                self._announce(plan)
                if self._append_now is not None:  # in memory: no coroutine to make and await
                    self._commit_now(self._append_now, RUNNING, None)
                else:
                    await self.commit(RUNNING, shield=self._loop_shield())
                if self.stopping():  # asked while we committed
                    return
                if self._snapshot_due:
                    await self.maybe_snapshot()
            fresh, self._fresh = self._fresh, False
            tasks = fold.tasks if fresh else [t for t in fold.tasks if t.runnable]
            if tasks:
                if len(tasks) == 1:
                    await run_task(self, tasks[0], fresh)
                else:
                    await run_tasks(self, tasks, fresh)
                if self.outcome is not None:  # a task's commit stopped the driver
                    return
                if self._failure is not None:
                    await self._end(Failed(self._failure), RunStatus.FAILED)
                    return
                continue
            # Parked: every open task waits on a human. A resume may land while we commit.
            await self.commit(RunStatus.INTERRUPTED, shield=self._loop_shield())
            if not any(t.runnable for t in fold.tasks):
                self.parked = True
                return

    def _announce(self, plan: list[tuple[str, Any]]) -> None:
        step = self.fold.step + 1
        joins = self._joins
        for index, (node, arg) in enumerate(plan):
            if arg is not NO_ARG and self.checks_values:
                self.check_json(arg, f"the Send payload for node {node!r}")
            self.record(
                StepStarted(step, index, node, arg=arg, joins=joins if index == 0 else None)
            )
        self._fresh = True
        if self._snapshot_every and step and step % self._snapshot_every == 0:
            self._snapshot_due = True

    def record_late(
        self, where: dict[str, Any], result: Any, error: BaseException | None, seconds: float
    ) -> None:
        """A worker thread this run stopped waiting for came back: record what it brought,
        for the record only (its node moved on: timed out, retried or cancelled).

        ``where`` names the attempt (step, task, node, attempt; and effect, name, key for
        an effect), as it was when the thread started.
        """
        what = f"effect {where['name']!r}" if "effect" in where else "the thread"
        log.warning(
            "run %s: %s of node %r (step %s, attempt %s) finished %.1f s after its node "
            "stopped waiting for it; its %s is discarded",
            self.run_id,
            what,
            where["node"],
            where["step"],
            where["attempt"],
            seconds,
            "error" if error is not None else "result",
        )
        if self.winding_up or self.fold.status.terminal or self.outcome is not None:
            return  # the journal is no longer ours to write: the log line is the record
        outcome: dict[str, Any] = (
            {"error": error_info(error)}
            if error is not None
            else {"result": jsonable_or_repr(result)}
        )
        self.record(Discarded(**where, seconds=round(seconds, 3), **outcome))

    async def _fail_run(self, exc: BaseException) -> None:
        tasks = self.fold.tasks
        node = ",".join(t.node for t in tasks) or START
        await self._end(Failed(describe(exc, node, self.fold.step, -1, 0)), RunStatus.FAILED)

    def fail(self, error: ErrorInfo) -> None:
        """A task failed for good: the run fails once its step stops; its siblings stop now."""
        if self._failure is None:
            self._failure = error
            if self.step_scope is not None:
                self.step_scope.cancel()

    async def _end(self, data: Failed | Finished | Cancelled, status: RunStatus) -> None:
        self.record(data)
        error = None
        if isinstance(data, Failed):
            error = data.error.summary
        # Ends are committed by the loop or after it: the driver's own commits (see commit).
        await self.commit(status, error, shield=self._loop_shield())

    @property
    def failed(self) -> bool:
        """A task of the current step failed for good (the run is failing)."""
        return self._failure is not None

    async def end_cancelled(self, reason: str) -> None:
        """Record that the run was cancelled, unless it already ended."""
        if not self.fold.status.terminal:
            await self._end(Cancelled(reason, actor=self.cancel_actor), RunStatus.CANCELLED)

    def request_cancel(self, actor: str | None = None) -> None:
        self.cancel_requested = True
        self.cancel_actor = actor
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

    def stopping(self) -> bool:
        """A cancel or a shutdown was asked: the driver stops at its next step boundary
        (and waits for a node's worker thread, whose effects get journaled)."""
        return self.cancel_requested or self.abandoned

    def _giving_up(self) -> bool:
        return self.abandoned
