"""Runs as one process sees them: making new ones, adopting others, waiting on any.

* New runs: a ``run_started`` and the first step's plan, created in one commit (now,
  or by the driver's first commit); a start with the id of an existing run must ask
  the same as it did.
* Adopting a run nobody drives: claim its lease, then rebuild its fold from the
  journal (a snapshot and what came after).
* Waiting: follow the live driver here, or the journal when another process drives
  the run; raise when the run can no longer move in this process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from ..errors import (
    RunExistsError,
    RunNotFoundError,
    RunStateError,
    SerializationError,
    StoreError,
)
from ..events import (
    RUN_STARTED,
    Event,
    RunStarted,
    decode,
    difference,
    encode,
    to_jsonable,
)
from ..graph.compiled import CompiledGraph
from ..status import RUNNING, SYNC, Durability, RunStatus
from ..store import QueuePlacement, RunRecord, Store, appends_now, tenant_of
from ._tasks import RunTasks
from .driver import RunDriver
from .fold import RunFold
from .journal import new_event
from .loader import GraphLoader
from .outcome import RunOutcome, outcome_of
from .queueing import StatusWatch
from .recorded import reusable_effects
from .registry import LiveRuns, lost_the_run
from .seams import EngineServices, Listener, ReplayOracle


class Runs:
    """The runs of one runtime: see the module's docstring."""

    def __init__(
        self,
        services: EngineServices,
        loader: GraphLoader,
        *,
        durability: Durability,
        will_recover: Callable[[RunRecord], bool],
    ) -> None:
        self.services = services
        self.store = services.store
        self.registry: LiveRuns[RunDriver] = services.registry
        self.loader = loader
        self.durability = durability
        self.tasks = RunTasks()
        self.open = False  # the runtime is entered: runs may be spawned in tasks
        self._will_recover = will_recover
        # Other processes' status changes, heard once a wait needs them (queueing.py).
        self.status_watch = StatusWatch(self.store, self.registry)

    # -- new runs -----------------------------------------------------------------------

    async def drive_here(
        self,
        graph: CompiledGraph,
        input: Any,
        run_id: str | None,
        thread: str | None,
        durability: Durability | str | None,
        metadata: dict[str, Any] | None,
    ) -> tuple[str, RunDriver | None]:
        """Begin a run and drive it in the calling task (``Runtime.run``): no task to
        spawn, no wake-up to wait for. Without a ``run_id`` the run is created by its
        first commit. Returns the run's id and its driver (None: the run existed and
        another driver has it); a store failure is raised, the run left resumable."""
        run_id, driver = await self.begin(
            graph, input, run_id, thread, durability, metadata, defer=run_id is None
        )
        if driver is not None:
            self.registry.add(driver)
            await driver.drive()
            outcome = driver.outcome
            if isinstance(outcome, StoreError) and not lost_the_run(outcome):
                raise outcome  # the store failed: the run stays resumable; say why
        return run_id, driver

    async def begin(
        self,
        graph: CompiledGraph,
        input: Any,
        run_id: str | None,
        thread: str | None,
        durability: Durability | str | None,
        metadata: dict[str, Any] | None,
        *,
        defer: bool = False,
        placement: QueuePlacement | None = None,
    ) -> tuple[str, RunDriver | None]:
        """A new run's driver (None if a run of that id exists, asking the same). A run
        placed in a queue (``placement``) is created now, owned by nobody, for a worker
        of that queue to drive: its driver is returned but must not be driven here."""
        if not self.loader.knows(graph):
            self.loader.register(graph)
        check_tenant(metadata)
        chosen = run_id is not None
        run_id = run_id or os.urandom(16).hex()  # a random 128-bit id, as uuid4 but cheaper
        live = self.registry.get(run_id)
        if live is not None:
            fold = live.fold
            check_same_tenant(run_id, tenant_of(fold.metadata), tenant_of(metadata))
            check_same_start(run_id, fold.graph, fold.input, fold.thread, graph, input, thread)
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
        driver = await self.create(
            graph,
            run_id,
            data,
            durable,
            parent_run_id=None,
            metadata=metadata,
            wait=(durable is SYNC and not defer) or chosen or placement is not None,
            placement=placement,
        )
        if driver is not None:
            driver.defer_create(defer)
        return run_id, driver

    async def create(
        self,
        graph: CompiledGraph,
        run_id: str,
        data: RunStarted,
        durability: Durability,
        *,
        parent_run_id: str | None,
        metadata: dict[str, Any] | None,
        wait: bool = True,
        placement: QueuePlacement | None = None,
    ) -> RunDriver | None:
        """A driver for a new run, its start and first plan to be written in one commit.

        With ``wait`` the run is created now, and None returned if a run with that
        id already existed; otherwise the driver creates it before its first step.
        """
        if self.services.check_json:
            check_input(graph, run_id, data.input)
        now = time.time()
        started = new_event(Event, (run_id, 1, RUN_STARTED, now, data))
        record = RunRecord(
            run_id=run_id,
            graph=graph.name,
            thread=data.thread,
            status=RUNNING,
            created_at=now,
            updated_at=now,
            parent_run_id=parent_run_id,
            durability=durability,
            # A queued run waits for a worker: no owner, and the worker's claim makes fence 1.
            owner=None if placement else self.services.owner,
            lease_until=None if placement else now + self.services.lease_ttl,
            fence=0 if placement else 1,
            # A copy: the run's tenant is fixed at its start, whatever the caller's dict does.
            metadata=dict(metadata) if metadata else {},
            queue=placement,
        )
        driver = self.driver(graph, RunFold(graph.schema), durability)
        driver.begin(started, record)
        if wait and not await driver.create():
            existing = driver.existing
            assert existing is not None
            check_same_tenant(run_id, existing.tenant, record.tenant)
            if existing.parent_run_id is None:  # a subgraph's child run is its parent's to check
                stored = await self.started(run_id)
                check_same_start(
                    run_id, existing.graph, stored.input, existing.thread,
                    graph, data.input, data.thread,
                )  # fmt: skip
            return None
        return driver

    def driver(
        self,
        graph: CompiledGraph,
        fold: RunFold,
        durability: Durability,
        oracle: ReplayOracle | None = None,
        store: Store | None = None,
        listeners: list[Listener] | None = None,
    ) -> RunDriver:
        services = self.services
        store = store or services.store
        if listeners is None:
            # The runtime's own list is shared until a run gets live subscribers (copied then).
            listeners = services.listeners
            subs = self.registry.subscribers(fold.run_id)
            if subs is not None:
                listeners = [*listeners, subs.publish]
        return RunDriver(
            services,
            graph,
            fold,
            store=store,
            durability=durability,
            check_json=services.check_json,
            snapshot_every=services.snapshot_every,
            listeners=listeners,
            oracle=oracle,
            append_now=store.append_now if appends_now(store) else None,
        )

    def spawn(self, driver: RunDriver) -> None:
        """Drive ``driver``'s run in a task of its own."""
        if not self.open:
            raise RunStateError("the runtime is not open; use 'async with Runtime.open(...) as rt'")
        self.registry.add(driver)
        self.registry.signal(driver.run_id)
        driver.own_task = True
        self.tasks.spawn(driver, driver.drive())

    # -- runs in the store ------------------------------------------------------------------

    async def record(self, run_id: str) -> RunRecord:
        record = await self.store.get_run(run_id)
        if record is None:
            raise RunNotFoundError(run_id)
        return record

    async def started(self, run_id: str) -> RunStarted:
        """The data of the run's first event, its ``run_started``."""
        events = await self.store.read(run_id, until=1)
        if not events:
            raise RunNotFoundError(run_id)
        return started_of(events[0])

    async def graph_of(
        self, run_id: str, graph: CompiledGraph | None, record: RunRecord | None = None
    ) -> CompiledGraph:
        """The run's graph: the one given, a registered one, or (read from the journal only
        then) its recorded ref's."""
        if record is None:
            record = await self.record(run_id)
        known = self.loader.known(run_id, record.graph, graph)
        if known is not None:
            return known
        started = await self.started(run_id)
        return self.loader.graph_for(run_id, record.graph, started.ref, None)

    async def load_fold(
        self, graph: CompiledGraph, run_id: str, *, at: int | None = None
    ) -> RunFold:
        revive = self.services.revive
        snapshot = await self.store.load_snapshot(run_id, at_most=at)
        if snapshot is not None:
            fold = RunFold.from_snapshot(graph.schema, snapshot.seq, snapshot.data)
            fold.revive = revive
        else:
            fold = RunFold(graph.schema, revive=revive)
        for event in await self.store.read(run_id, after=fold.seq, until=at):
            fold.apply(event)
        if fold.seq == 0:
            raise RunNotFoundError(run_id)
        return fold

    async def adopt(
        self, run_id: str, graph: CompiledGraph | None, record: RunRecord | None = None
    ) -> RunDriver:
        """Take over a run that nobody drives: claim its lease and rebuild its fold.

        ``record``: the run's record as the caller just read it (saves a read).
        """
        if record is None:
            record = await self.record(run_id)
        app = await self.graph_of(run_id, graph, record)
        driver = await self.claimed(
            app,
            run_id,
            record.durability,
            busy=f"run {run_id!r} is being driven by another process"
            + (f" ({record.owner})" if record.owner else " (which took it just now)")
            + (
                "; a worker of its queue drives it: it takes resume values once it parks"
                if record.queue is not None
                else "; act on it there, or wait for its lease to expire"
            ),
        )
        forked = driver.fold.forked_from
        if forked is not None and forked.effects == "reuse":
            later = await self.store.read(forked.run_id, after=forked.seq)
            driver.reuse = reusable_effects(forked.run_id, later)
        return driver

    async def claimed(
        self, app: CompiledGraph, run_id: str, durability: Durability, *, busy: str
    ) -> RunDriver:
        """A driver for an existing run whose lease this runtime has just claimed, its fold
        read after the claim (nobody else writes then); RunStateError(``busy``) if another
        process holds the lease."""
        services = self.services
        started = time.monotonic()
        fence = await self.store.claim(run_id, services.owner, services.lease_ttl)
        if fence is None:
            raise RunStateError(busy)
        driver = self.driver(app, await self.load_fold(app, run_id), durability)
        driver.fence = fence
        driver.lease_valid_until = started + services.lease_ttl
        return driver

    # -- waiting ---------------------------------------------------------------------------

    async def wait(self, run_id: str) -> RunOutcome:
        """Until the run stops moving; raises if it can no longer move in this process.

        A run another process took over is followed through the journal; one stopped
        here by its store raises that error; one that nobody drives (and that this
        runtime will not recover) raises RunStateError saying how to resume it.
        """
        registry = self.registry
        while True:
            live = registry.get(run_id)
            if live is not None:
                await live.done.wait()
                if registry.get(run_id) is live:
                    continue  # stopped, not yet forgotten: look again
                outcome = live.outcome
                if outcome is None or not isinstance(outcome, StoreError):
                    return outcome_of(live.fold)
                if not lost_the_run(outcome):
                    raise outcome  # the store failed: the run stays resumable; say why
                continue  # another process drives it now: follow its journal
            fault = registry.fault(run_id)
            if fault is not None:
                raise fault
            record = await self.record(run_id)
            if record.status is not RunStatus.RUNNING:
                return await self.outcome(run_id, None)
            if record.owner is None and not self._will_recover(record):
                raise RunStateError(
                    f"run {run_id!r} is running in its journal but no process drives it (its "
                    f"last process stopped without ending it); resume it with "
                    f"runtime.resume({run_id!r}) or `mainspring resume {run_id}`"
                )
            await self.watch_store()
            await registry.wait_for_change(run_id)

    async def watch_store(self) -> None:
        """Hear other processes' status changes from now on (where the store can say)."""
        await self.status_watch.ensure()

    async def outcome(self, run_id: str, graph: CompiledGraph | None) -> RunOutcome:
        """Where the run stands now, read from its journal."""
        live = self.registry.get(run_id)
        if live is not None:
            return outcome_of(live.fold)
        app = await self.graph_of(run_id, graph)
        return outcome_of(await self.load_fold(app, run_id))


def check_same_start(
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


def check_tenant(metadata: dict[str, Any] | None) -> None:
    """A run's tenant is a string: refuse any other value before it is journaled."""
    if metadata and "tenant" in metadata and not isinstance(metadata["tenant"], str):
        raise RunStateError(
            f"metadata['tenant'] is {metadata['tenant']!r}; a tenant is named by a string "
            "(omit it for the default tenant)"
        )


def check_same_tenant(run_id: str, stored: str, asked: str) -> None:
    """A start with the id of another tenant's run is refused without a word about that run
    (its graph, input or thread): the id is taken, nothing more."""
    if stored != asked:
        raise RunExistsError(f"run id {run_id!r} is taken; choose another id")


def check_input(graph: CompiledGraph, run_id: str, input: Any) -> None:
    """Refuse an input whose state the journal would give back changed on resume."""
    what = f"the input of run {run_id!r}"
    live = graph.schema.initial(input)
    back = graph.schema.initial_from_json(decode(encode(input, what=what)))
    for key, value in live.items():
        where = difference(value, back.get(key))
        if where is not None:
            raise SerializationError(
                f"{what}, field {key!r} cannot be kept as it is by the journal: {where}; "
                "declare the field's type in the state, or pass plain JSON values"
            )


def started_of(first: Event) -> RunStarted:
    """The data of a run's first event, which is always its run_started."""
    data = first.data
    if not isinstance(data, RunStarted):
        raise RunStateError(f"run {first.run_id!r} does not begin with run_started; run doctor")
    return data
