"""The Runtime: opens a store, starts, resumes, cancels and recovers runs.

One async implementation; ``mainspring.SyncRuntime`` wraps it for scripts.
Every run is driven by a :class:`~mainspring.engine.driver.RunDriver` inside the
runtime's task group; closing the runtime waits for live runs to finish or park
(``drain_timeout``), then leaves the rest resumable in their journals.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
import weakref
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup

from ..errors import (
    GraphError,
    RunExistsError,
    RunNotFoundError,
    RunStateError,
    SerializationError,
    StoreError,
)
from ..events import Event, EventKind, RunStarted, to_jsonable
from ..graph.compiled import CompiledGraph
from ..status import Durability, RunStatus
from ..store import MemoryStore, store_from_url
from ..store._owner import new_owner_id
from ..store.base import RunQuery, RunRecord, Store, ThreadInfo
from . import control, history
from ._tasks import RunTasks
from .driver import ReplayOracle, RunDriver
from .fold import RunFold
from .gate import Gate
from .handle import RunHandle, RunOutcome, Subscribers, outcome_of
from .history import ForkEffects, ReplayReport, StateView, reusable_effects
from .journal import Listener, lost_the_run, new_event

log = logging.getLogger("mainspring.runtime")

Recover = Literal["resume", "list", "off"]


class Runtime:
    """Runs graphs durably against one store.

    ``durability`` is the default for runs (``sync``, ``batch`` or ``off``);
    ``recover`` says what to do on open with runs a crashed process left
    unfinished: ``resume`` them (their graphs must be registered with
    ``graphs=`` or importable by ``ref``), ``list`` them in
    ``runtime.recoverable``, or ``off``. With ``resume``, the runtime keeps
    looking once per ``lease_ttl`` while it is open, so runs whose process froze
    or died later are taken over once their leases expire.

    ``retry_for`` is how long a write the store could not make (a full disk, a
    locked file) is retried before the run is left as its journal stands:
    resumable, its lease handed back, and the error raised to whoever waits on it.
    A storage error never fails a run.
    """

    def __init__(
        self,
        store: Store,
        *,
        durability: Durability | str = Durability.SYNC,
        graphs: Iterable[CompiledGraph] = (),
        recover: Recover = "resume",
        lease_ttl: float = 30.0,
        drain_timeout: float | None = None,
        check_json: bool | None = None,
        snapshot_every: int = 1000,
        listeners: Sequence[Listener] = (),
        retry_for: float = 30.0,
        gates: Sequence[object] = (),
    ) -> None:
        if lease_ttl <= 0 or retry_for < 0:
            raise RunStateError(
                f"Runtime(lease_ttl={lease_ttl}, retry_for={retry_for}): lease_ttl must be "
                "positive and retry_for at least 0"
            )
        self.store = store
        self.gate = Gate(gates)  # the hooks every effect of every run passes
        self.durability = Durability(durability)
        self.owner = new_owner_id()
        self.lease_ttl = lease_ttl
        self.retry_for = retry_for
        # A lease that cannot be handed back now is retried by the heartbeat; a release
        # waits no longer than this (the store may be the reason the run stopped).
        self.release_timeout = min(5.0, max(retry_for, 0.5))
        self._unreleased: set[str] = set()
        # Runs whose driver stopped here on a store failure: what their waiters raise.
        self._faults: dict[str, BaseException] = {}
        self.drain_timeout = drain_timeout
        self.recover_mode: Recover = recover
        self.recoverable: list[RunRecord] = []
        self._memory = isinstance(store, MemoryStore)
        self._check_json = (not self._memory) if check_json is None else check_json
        self._snapshot_every = snapshot_every
        self._graphs: dict[str, CompiledGraph] = {}
        for g in graphs:
            self.register(g)
        self._listeners = list(listeners)
        self._live: dict[str, RunDriver] = {}
        # The newest driver of each run while anything (a handle) still holds it.
        self._latest: weakref.WeakValueDictionary[str, RunDriver] = weakref.WeakValueDictionary()
        self._subscribers: dict[str, Subscribers] = {}
        self._changed: dict[str, anyio.Event] = {}
        self._tg: TaskGroup | None = None  # the runtime's own service tasks (heartbeat)
        self._runs = RunTasks()
        self._heartbeat_scope: anyio.CancelScope | None = None

    @classmethod
    def open(cls, url: str = "sqlite:///mainspring.db", **options: Any) -> Runtime:
        """A runtime on the store at ``url``; use it as ``async with Runtime.open(url) as rt``."""
        return cls(store_from_url(url), **options)

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        await self.store.open()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._heartbeat)
        if self.recover_mode != "off":
            await self.recover(resume=self.recover_mode == "resume")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg = self._tg
        assert tg is not None, "the runtime was not entered"
        try:
            if exc_type is None and self._live:
                with anyio.move_on_after(self.drain_timeout):
                    while self._live:
                        await next(iter(self._live.values())).done.wait()
            # Whatever still runs is abandoned, not cancelled: its journal stays resumable.
            with anyio.CancelScope(shield=True):  # abandoned runs stop at their next await
                await self._runs.aclose()
                if self._unreleased:  # a last try, so the next process need not wait
                    await self._release_pending()
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
        finally:
            self._tg = None
            with anyio.CancelScope(shield=True):
                await self.store.aclose()

    async def _heartbeat(self) -> None:
        beats = 0
        while True:
            await anyio.sleep(self.lease_ttl / 3)
            beats += 1
            if self._unreleased:  # before renewing, which would extend them too
                await self._release_pending()
            if self._live:
                await self._renew()
            if self.recover_mode == "resume" and beats % 3 == 0:
                try:
                    await self.recover()
                except StoreError as exc:
                    log.warning("could not look for runs to recover: %s", exc)

    async def _renew(self) -> None:
        """One renewal for every lease of this runtime; drivers learn how long they hold."""
        started = time.monotonic()
        try:
            await self.store.renew(self.owner, self.lease_ttl)
        except StoreError as exc:
            log.warning("could not renew run leases: %s", exc)
            return
        # Only a chain of renewals with no gap keeps a lease: one renewed after it could
        # have expired may have been taken over meanwhile (its driver looks before acting).
        until = started + self.lease_ttl
        for driver in list(self._live.values()):
            if started < driver.lease_valid_until:
                driver.lease_valid_until = until

    def release_later(self, run_id: str) -> None:
        """A lease a driver could not hand back: the heartbeat tries again."""
        self._unreleased.add(run_id)

    async def _release_pending(self) -> None:
        for run_id in list(self._unreleased):
            if run_id in self._live:
                self._unreleased.discard(run_id)  # driven here again: the lease is in use
                continue
            try:
                with anyio.move_on_after(self.release_timeout):
                    await self.store.release(run_id, self.owner)
                    self._unreleased.discard(run_id)
            except StoreError as exc:
                log.warning("could not release run %s: %s", run_id, exc)
                return  # the store is still failing: try again at the next beat

    # -- graphs ----------------------------------------------------------------------

    def register(self, graph: CompiledGraph) -> None:
        """Make ``graph`` known so its runs can be resumed and recovered by name."""
        if not isinstance(graph, CompiledGraph):
            raise GraphError(
                f"expected a compiled graph (Graph.compile()), got {type(graph).__name__}"
            )
        known = self._graphs.get(graph.name)
        if known is not None and known is not graph and known.fingerprint != graph.fingerprint:
            log.warning("graph %r re-registered with a different shape", graph.name)
        self._graphs[graph.name] = graph

    def _graph_for(
        self, run_id: str, name: str, ref: str | None, graph: CompiledGraph | None
    ) -> CompiledGraph:
        if graph is not None:
            if graph.name != name:
                raise RunStateError(f"run {run_id!r} belongs to graph {name!r}, not {graph.name!r}")
            self.register(graph)
            return graph
        known = self._graphs.get(name)
        if known is not None:
            return known
        if ref:
            found = load_graph(ref)
            if found.name == name:
                self.register(found)
                return found
        raise RunStateError(
            f"run {run_id!r} belongs to graph {name!r}, which this runtime does not know; "
            "pass graph=... or register it with Runtime(graphs=[...])"
        )

    # -- starting --------------------------------------------------------------------

    async def start(
        self,
        graph: CompiledGraph,
        input: Any = None,
        *,
        run_id: str | None = None,
        thread: str | None = None,
        durability: Durability | str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> RunHandle:
        """Start a run in the background; returns its handle once the start is durable.

        Starting is idempotent by ``run_id``: a second start with the id of an
        existing run returns that run's handle and starts nothing.
        """
        run_id, driver = await self._begin(graph, input, run_id, thread, durability, metadata)
        if driver is not None:
            self._spawn(driver)
        return RunHandle(self, run_id, driver)

    async def run(
        self,
        graph: CompiledGraph,
        input: Any = None,
        *,
        run_id: str | None = None,
        thread: str | None = None,
        durability: Durability | str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Any:
        """Run to the end in the calling task and return the final state.

        If the caller is cancelled the run is left as its journal says,
        resumable. A run that parks on an interrupt is waited for until resumed.
        Without a ``run_id`` the run is created by its first commit (the end of
        its first step, its first effect, or its first park), which saves a
        commit per run; with one, it is created first, as by ``start``.
        """
        run_id, driver = await self._begin(
            graph, input, run_id, thread, durability, metadata, defer=run_id is None
        )
        if driver is not None:
            self._live[run_id] = self._latest[run_id] = driver
            self._faults.pop(run_id, None)
            await driver.drive()
            if driver.outcome is None and driver.fold.status is RunStatus.FINISHED:
                return graph.schema.output(driver.fold.state)
            outcome = driver.outcome
            if isinstance(outcome, StoreError) and not lost_the_run(outcome):
                raise outcome  # the store failed: the run stays resumable; say why
        return await RunHandle(self, run_id).result()

    async def _begin(
        self,
        graph: CompiledGraph,
        input: Any,
        run_id: str | None,
        thread: str | None,
        durability: Durability | str | None,
        metadata: dict[str, Any] | None,
        *,
        defer: bool = False,
    ) -> tuple[str, RunDriver | None]:
        if self._graphs.get(graph.name) is not graph:
            self.register(graph)
        chosen = run_id is not None
        run_id = run_id or os.urandom(16).hex()  # a random 128-bit id, as uuid4 but cheaper
        if run_id in self._live:
            live = self._live[run_id]
            self._check_same_start(run_id, live.fold.graph, live.fold.input, live.fold.thread,
                                   graph, input, thread)  # fmt: skip
            return run_id, None
        durable = Durability(durability) if durability is not None else self.durability
        data = RunStarted(
            graph.name,
            graph.fingerprint,
            input,
            durable.value,
            thread=thread,
            metadata=metadata or None,
            ref=graph.ref,
            nonce=os.urandom(8).hex(),  # in trace ids: two runs given one id stay apart
        )
        # sync: start() returns once the run is durable. batch/off: the driver creates
        # it in a group commit before its first step, so many starts share one commit;
        # a start with a chosen id waits for its (group) commit, to know the id was free.
        driver = await self._create(
            graph,
            run_id,
            data,
            durable,
            parent_run_id=None,
            metadata=metadata,
            wait=(durable is Durability.SYNC and not defer) or chosen,
        )
        if driver is not None:
            driver.defer_create(defer)
        return run_id, driver

    async def _create(
        self,
        graph: CompiledGraph,
        run_id: str,
        data: RunStarted,
        durability: Durability,
        *,
        parent_run_id: str | None,
        metadata: dict[str, Any] | None,
        wait: bool = True,
    ) -> RunDriver | None:
        """A driver for a new run, its start and first plan to be written in one commit.

        With ``wait`` the run is created now, and None returned if a run with that
        id already existed; otherwise the driver creates it before its first step.
        """
        if self._check_json:
            self._check_input(graph, run_id, data.input)
        now = time.time()
        started = new_event(Event, (run_id, 1, EventKind.RUN_STARTED, now, data))
        record = RunRecord(
            run_id=run_id,
            graph=graph.name,
            thread=data.thread,
            status=RunStatus.RUNNING,
            created_at=now,
            updated_at=now,
            parent_run_id=parent_run_id,
            durability=durability,
            owner=self.owner,
            lease_until=now + self.lease_ttl,
            fence=1,
            metadata=metadata or {},
        )
        driver = self._driver(graph, RunFold(graph.schema), durability)
        driver.begin(started, record)
        if wait and not await driver.create():
            existing = driver.existing
            assert existing is not None
            if existing.parent_run_id is None:  # a subgraph's child run is its parent's to check
                first = await self._first_event(run_id)
                self._check_same_start(
                    run_id, existing.graph, _started(first).input, existing.thread,
                    graph, data.input, data.thread,
                )  # fmt: skip
            return None
        return driver

    @staticmethod
    def _check_same_start(
        run_id: str,
        graph_name: str,
        stored_input: Any,
        stored_thread: str | None,
        graph: CompiledGraph,
        input: Any,
        thread: str | None,
    ) -> None:
        """A start with the id of an existing run is idempotent only if it asks the same."""
        if graph_name != graph.name:
            differs = f"graph {graph_name!r}, not {graph.name!r}"
        elif stored_thread != thread:
            differs = f"thread {stored_thread!r}, not {thread!r}"
        else:
            try:
                same = to_jsonable(stored_input) == to_jsonable(input)
            except SerializationError:
                same = False
            if same:
                return
            differs = "a different input"
        raise RunExistsError(
            f"run id {run_id!r} is taken by a run started with {differs}; starting again "
            "with the same id returns that run only for the same graph, input and thread: "
            "choose another id, or repeat the original request"
        )

    @staticmethod
    def _check_input(graph: CompiledGraph, run_id: str, input: Any) -> None:
        """Refuse an input whose state the journal would give back changed on resume."""
        what = f"the input of run {run_id!r}"
        live = graph.schema.initial(input)
        back = graph.schema.initial_from_json(_decoded(input, what))
        for key, value in live.items():
            check_faithful_pair(value, back.get(key), f"{what}, field {key!r}")

    def _driver(
        self,
        graph: CompiledGraph,
        fold: RunFold,
        durability: Durability,
        oracle: ReplayOracle | None = None,
        store: Store | None = None,
    ) -> RunDriver:
        store = store or self.store
        # The runtime's own list is shared until a run gets live subscribers (copied then).
        listeners: list[Listener] = self._listeners
        subs = self._subscribers.get(fold.run_id)
        if subs is not None:
            listeners = [*listeners, subs.publish]
        return RunDriver(
            self,
            graph,
            fold,
            store=store,
            durability=durability,
            check_json=self._check_json,
            snapshot_every=self._snapshot_every,
            listeners=listeners,
            oracle=oracle,
            append_now=store.append_now if isinstance(store, MemoryStore) else None,
        )

    def _subscribers_of(self, run_id: str) -> Subscribers:
        subs = self._subscribers.get(run_id)
        if subs is None:
            subs = self._subscribers[run_id] = Subscribers()
        return subs

    def _spawn(self, driver: RunDriver) -> None:
        if self._tg is None:
            raise RunStateError("the runtime is not open; use 'async with Runtime.open(...) as rt'")
        self._live[driver.run_id] = self._latest[driver.run_id] = driver
        self._faults.pop(driver.run_id, None)
        self._signal(driver.run_id)
        driver.own_task = True
        self._runs.spawn(driver, driver.drive())

    def _driver_stopped(self, driver: RunDriver) -> None:
        """Called by a driver as it stops (``RunDriver.drive``'s last act)."""
        outcome = driver.outcome
        if isinstance(outcome, StoreError) and not lost_the_run(outcome):
            self._faults[driver.run_id] = outcome  # before waking waiters: they raise it
        self._forget(driver)
        if outcome is not None and not isinstance(outcome, RunStateError):
            log.warning("run %s stopped: %s", driver.run_id, outcome)

    def _forget(self, driver: RunDriver) -> None:
        """A driver stopped: drop it, end its live streams, wake whoever waits on the run.

        No await here: a resume must never find a driver that has left.
        """
        if self._live.get(driver.run_id) is driver:
            del self._live[driver.run_id]
        subs = self._subscribers.pop(driver.run_id, None)
        if subs is not None:
            subs.close_all()
        self._signal(driver.run_id)

    def _signal(self, run_id: str) -> None:
        event = self._changed.pop(run_id, None)
        if event is not None:
            event.set()

    async def _wait_for_change(self, run_id: str) -> None:
        """Wait until the run starts or stops here, or a poll interval passes."""
        from .handle import POLL_INTERVAL

        event = self._changed.get(run_id)
        if event is None:
            event = self._changed[run_id] = anyio.Event()
        try:
            with anyio.move_on_after(POLL_INTERVAL * 5):
                await event.wait()
        finally:
            if self._changed.get(run_id) is event:  # nothing happened: keep no state per run
                del self._changed[run_id]

    # -- loading ---------------------------------------------------------------------

    async def _load_fold(
        self, graph: CompiledGraph, run_id: str, *, at: int | None = None
    ) -> RunFold:
        snapshot = await self.store.load_snapshot(run_id, at_most=at)
        if snapshot is not None:
            fold = RunFold.from_snapshot(graph.schema, snapshot.seq, snapshot.data)
            fold.revive = not self._memory
        else:
            fold = RunFold(graph.schema, revive=not self._memory)
        for event in await self.store.read(run_id, after=fold.seq, until=at):
            fold.apply(event)
        if fold.seq == 0:
            raise RunNotFoundError(run_id)
        return fold

    async def _record(self, run_id: str) -> RunRecord:
        record = await self.store.get_run(run_id)
        if record is None:
            raise RunNotFoundError(run_id)
        return record

    async def _first_event(self, run_id: str) -> Event:
        events = await self.store.read(run_id, until=1)
        if not events:
            raise RunNotFoundError(run_id)
        return events[0]

    async def _adopt(self, run_id: str, graph: CompiledGraph | None) -> RunDriver:
        """Take over a run that nobody drives: claim its lease and rebuild its fold."""
        record = await self._record(run_id)
        first = await self._first_event(run_id)
        app = self._graph_for(run_id, record.graph, _started(first).ref, graph)
        started = time.monotonic()
        fence = await self.store.claim(run_id, self.owner, self.lease_ttl)
        if fence is None:
            raise RunStateError(
                f"run {run_id!r} is being driven by another process ({record.owner}); "
                "act on it there, or wait for its lease to expire"
            )
        fold = await self._load_fold(app, run_id)  # read after the claim: nobody else writes
        driver = self._driver(app, fold, record.durability)
        driver.fence = fence
        driver.lease_valid_until = started + self.lease_ttl
        forked = fold.forked_from
        if forked is not None and forked.effects == "reuse":
            later = await self.store.read(forked.run_id, after=forked.seq)
            driver.reuse = reusable_effects(forked.run_id, later)
        return driver

    # -- resuming, cancelling, recovering --------------------------------------------

    async def resume(
        self,
        run_id: str,
        value: Any = None,
        *,
        interrupt_id: str | None = None,
        values: dict[str, Any] | None = None,
        graph: CompiledGraph | None = None,
    ) -> RunHandle:
        """Continue a parked run: the pending interrupt returns ``value`` in its node.

        With several pending interrupts, name one with ``interrupt_id`` or pass
        ``values={id: value, ...}``. A run left running by a crashed process is
        resumed from its journal (no value needed).
        """
        return await control.resume(self, run_id, value, interrupt_id, values, graph)

    async def cancel(self, run_id: str) -> None:
        """Cancel a run: a live one is stopped, a parked one is ended in its journal.

        A parked run needs no graph: its journal gets a ``cancelled`` event, and so do
        its parked subgraph runs.
        """
        await control.cancel(self, run_id)

    async def recover(self, *, resume: bool = True) -> list[RunRecord]:
        """Find runs a crashed process left running; resume those whose graph is known.

        Returns the runs found. Those that could not be resumed (unknown graph,
        or ``resume=False``) are kept in ``runtime.recoverable``.
        """
        return await control.recover(self, resume)

    # -- waiting ---------------------------------------------------------------------

    async def _wait(self, run_id: str) -> RunOutcome:
        """Until the run stops moving; raises if it can no longer move in this process.

        A run another process took over is followed through the journal; one stopped
        here by its store raises that error; one that nobody drives (and that this
        runtime will not recover) raises RunStateError saying how to resume it.
        """
        while True:
            live = self._live.get(run_id)
            if live is not None:
                await live.done.wait()
                if self._live.get(run_id) is live:
                    continue  # stopped, not yet forgotten: look again
                outcome = live.outcome
                if outcome is None or not isinstance(outcome, StoreError):
                    return outcome_of(live.fold)
                if not lost_the_run(outcome):
                    raise outcome  # the store failed: the run stays resumable; say why
                continue  # another process drives it now: follow its journal
            fault = self._faults.get(run_id)
            if fault is not None:
                raise fault
            record = await self._record(run_id)
            if record.status is not RunStatus.RUNNING:
                return await self.outcome(run_id)
            if record.owner is None and not self._will_recover(record):
                raise RunStateError(
                    f"run {run_id!r} is running in its journal but no process drives it (its "
                    f"last process stopped without ending it); resume it with "
                    f"runtime.resume({run_id!r}) or `mainspring resume {run_id}`"
                )
            await self._wait_for_change(run_id)

    def _will_recover(self, record: RunRecord) -> bool:
        """Whether this runtime's recovery will take the run over (it looks periodically)."""
        return (
            self._tg is not None
            and self.recover_mode == "resume"
            and record.parent_run_id is None
            and all(r.run_id != record.run_id for r in self.recoverable)
        )

    async def outcome(self, run_id: str, graph: CompiledGraph | None = None) -> RunOutcome:
        """Where the run stands now, read from its journal."""
        live = self._live.get(run_id)
        if live is not None:
            return outcome_of(live.fold)
        record = await self._record(run_id)
        first = await self._first_event(run_id)
        app = self._graph_for(run_id, record.graph, _started(first).ref, graph)
        return outcome_of(await self._load_fold(app, run_id))

    def handle(self, run_id: str) -> RunHandle:
        return RunHandle(self, run_id)

    # -- queries (see queries.py for state, fork and replay) -------------------------

    async def get_run(self, run_id: str) -> RunRecord:
        return await self._record(run_id)

    async def list_runs(
        self,
        *,
        status: RunStatus | str | Sequence[RunStatus | str] | None = None,
        graph: str | None = None,
        thread: str | None = None,
        limit: int = 100,
        offset: int = 0,
        created_after: float | None = None,
        created_before: float | None = None,
    ) -> list[RunRecord]:
        statuses: list[RunStatus] | None = None
        if status is not None:
            items = [status] if isinstance(status, str | RunStatus) else list(status)
            try:
                statuses = [RunStatus(s) for s in items]
            except ValueError:
                choices = ", ".join(s.value for s in RunStatus)
                raise RunStateError(
                    f"unknown run status in {items!r}; use one of {choices}"
                ) from None
        return await self.store.list_runs(
            RunQuery(
                status=statuses,
                graph=graph,
                thread=thread,
                limit=limit,
                offset=offset,
                created_after=created_after,
                created_before=created_before,
            )
        )

    async def list_threads(self, *, limit: int = 100) -> list[ThreadInfo]:
        return await self.store.list_threads(limit=limit)

    async def events(self, run_id: str, *, after: int = 0, until: int | None = None) -> list[Event]:
        await self._record(run_id)
        return await self.store.read(run_id, after=after, until=until)

    async def state(
        self, run_id: str, *, at: int | None = None, graph: CompiledGraph | None = None
    ) -> StateView:
        """The run's state as of sequence number ``at`` (default: now)."""
        return await history.state_at(self, run_id, at, graph)

    async def fork(
        self,
        run_id: str,
        at: int | None = None,
        *,
        new_run_id: str | None = None,
        graph: CompiledGraph | None = None,
        thread: str | None = None,
        start: bool = True,
        effects: ForkEffects | None = None,
    ) -> RunHandle:
        """Start a new run whose journal is ``run_id``'s up to ``at``: time travel.

        Effects recorded before ``at`` are not repeated. Those the original run made
        after ``at`` are an explicit choice: ``effects="rerun"`` calls them again, with
        new idempotency keys (it is a new run); ``effects="reuse"`` answers each call
        the fork makes at the same place (step, task, effect, name) with the original's
        recorded result, and runs anything else. Without a choice, a fork that would
        repeat recorded side effects is refused with RunStateError.
        """
        return await history.fork(
            self,
            run_id,
            at,
            new_run_id=new_run_id,
            graph=graph,
            thread=thread,
            start=start,
            effects=effects,
        )

    async def replay(self, run_id: str, *, graph: CompiledGraph | None = None) -> ReplayReport:
        """Re-run a run against its recorded effects and report the first divergence."""
        return await history.replay(self, run_id, graph)


def load_graph(ref: str) -> CompiledGraph:
    """Import ``module:attribute`` and return the compiled graph it names."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise GraphError(f"graph reference {ref!r} must look like 'package.module:graph'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise GraphError(f"cannot import module {module_name!r} for graph {ref!r}: {exc}") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise GraphError(f"module {module_name!r} has no attribute {attr!r}") from None
    from ..graph.builder import Graph

    if isinstance(obj, Graph):
        obj = obj.compile(ref=ref)
    if not isinstance(obj, CompiledGraph):
        raise GraphError(
            f"{ref!r} is an object of type {type(obj).__name__}, not a graph; "
            "point at a Graph or its compile()"
        )
    if obj.ref is None:
        obj.ref = ref
    return obj


def _decoded(value: Any, what: str) -> Any:
    from ..events import decode, encode

    return decode(encode(value, what=what))


def check_faithful_pair(value: Any, back: Any, what: str) -> None:
    from ..events import difference

    where = difference(value, back)
    if where is not None:
        raise SerializationError(
            f"{what} cannot be kept as it is by the journal: {where}; declare the field's "
            "type in the state, or pass plain JSON values"
        )


def _started(first: Event) -> RunStarted:
    """The data of a run's first event, which is always its run_started."""
    data = first.data
    if not isinstance(data, RunStarted):
        raise RunStateError(f"run {first.run_id!r} does not begin with run_started; run doctor")
    return data
