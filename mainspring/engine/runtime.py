"""The Runtime: opens a store, starts, resumes, cancels and recovers runs.

One async implementation; ``mainspring.SyncRuntime`` wraps it for scripts. The
Runtime is the public facade over the engine's parts (``seams.py`` draws them):
the graphs it knows (``loader``), the runs it makes, adopts and waits on
(``runs``), the ones live here (``registry``), its heartbeat (``leases``), and
resume, cancel and recovery (``takeover``) and time travel (``timetravel``).
Every run is driven by a :class:`~mainspring.engine.driver.RunDriver` in a task
of its own; closing the runtime waits for live runs to finish or park
(``drain_timeout``), then leaves the rest resumable in their journals.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import anyio
from anyio.abc import TaskGroup

from ..errors import RunStateError
from ..events import Event
from ..graph.compiled import CompiledGraph
from ..status import Durability, RunStatus
from ..store import RunQuery, RunRecord, Store, ThreadInfo, store_from_url
from ..store._lease_owners import new_owner_id
from .capabilities import MemoryCapability, ModelCapability, ToolCapability
from .driver import RunDriver
from .gate import Gate
from .handle import RunHandle
from .leases import LeaseKeeper
from .loader import GraphLoader
from .outcome import RunOutcome, outcome_of
from .queueing import StatusWatch, placement
from .registry import LiveRuns
from .runs import Runs
from .seams import EngineServices, Listener
from .subgraph import Subgraphs
from .takeover import cancel_run, recover_runs, resume_run
from .tenancy import TenantRuntime

if TYPE_CHECKING:
    # Time travel loads on first use (state, fork, replay): most processes only run.
    from .timetravel import ForkEffects, ReplayReport, StateView

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

    ``gates`` are the effect gate's hooks (``mainspring.engine.gate``): every call a
    node makes to the world passes them, in order.

    ``models`` is the model gateway ``ctx.model`` calls (``mainspring.models.Gateway``);
    ``tools`` the toolbox ``ctx.tool`` calls (``mainspring.tools.Toolbox``). Their hooks
    join the gate after ``gates``: the tools' approvals, then the loop breaker and the
    budgets (last: a later hook that denied a call would leave a reservation counted).
    ``memory`` is what ``ctx.memory`` reads and writes (``mainspring.memory.Memory``): the
    runtime opens it on entry and closes it on exit.
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
        models: ModelCapability | None = None,
        tools: ToolCapability | None = None,
        memory: MemoryCapability | None = None,
    ) -> None:
        if lease_ttl <= 0 or retry_for < 0:
            raise RunStateError(
                f"Runtime(lease_ttl={lease_ttl}, retry_for={retry_for}): lease_ttl must be "
                "positive and retry_for at least 0"
            )
        keeps_objects = store.capabilities.keeps_objects  # no JSON round trip: nothing to check
        self.store = store
        self.durability = Durability(durability)
        self.drain_timeout = drain_timeout
        self.recover_mode: Recover = recover
        self.recoverable: list[RunRecord] = []
        self.services = EngineServices(
            store=store,
            owner=new_owner_id(),
            lease_ttl=lease_ttl,
            retry_for=retry_for,
            # A lease that cannot be handed back now is retried by the heartbeat; a
            # release waits no longer than this (the store may be why the run stopped).
            release_timeout=min(5.0, max(retry_for, 0.5)),
            # The hooks every effect of every run passes: the user's, then the capabilities'
            # (budgets and the loop breaker come after policy, as the design orders them).
            gate=Gate(
                [
                    *gates,
                    *(memory.gate_hooks if memory is not None else ()),
                    *(tools.gate_hooks if tools is not None else ()),
                    *(models.gate_hooks if models is not None else ()),
                ]
            ),
            models=models,
            tools=tools,
            memory=memory,
            registry=LiveRuns[RunDriver](),
            check_json=(not keeps_objects) if check_json is None else check_json,
            revive=not keeps_objects,
            snapshot_every=snapshot_every,
            listeners=list(listeners),
        )
        self.owner = self.services.owner  # this runtime's lease owner id (host:pid:token)
        self.lease_ttl = lease_ttl
        self.loader = GraphLoader(graphs)
        self._runs = Runs(
            self.services, self.loader, durability=self.durability, will_recover=self._will_recover
        )
        self.services.subgraphs = Subgraphs(self._runs)
        self._leases = LeaseKeeper(  # its heartbeat looks again for runs left behind
            self.services, self.recover if recover == "resume" else None
        )
        self._tg: TaskGroup | None = None  # the runtime's own service tasks (heartbeat)
        self._draining: anyio.CancelScope | None = None  # the exit's drain, while it lasts

    @classmethod
    def open(cls, url: str = "sqlite:///mainspring.db", **options: Any) -> Runtime:
        """A runtime on the store at ``url``; use it as ``async with Runtime.open(url) as rt``."""
        return cls(store_from_url(url), **options)

    @property
    def gate(self) -> Gate:
        return self.services.gate

    def tenant(self, tenant: str) -> TenantRuntime:
        """This runtime as one tenant sees it: every call scoped to ``tenant``'s runs, and
        every start made as that tenant (``docs/tenants.md``). The runtime itself is the
        admin view: it sees every tenant's runs."""
        return TenantRuntime(self, tenant)

    def live_runs(self) -> list[str]:
        """The ids of the runs this runtime drives right now."""
        return list(self.services.registry)

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        await self.store.open()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self.services.spawn = tg.start_soon  # capabilities' own tasks (they catch their errors)
        self._runs.open = True
        tg.start_soon(self._leases.heartbeat)
        try:
            # Gate hooks that need the runtime (a policy reading the tools' facts) come first,
            # the capabilities after them (the toolbox looks for a policy in the gate).
            services = self.services
            for capability in (*self.gate.hooks, services.memory, services.tools, services.models):
                attach = getattr(capability, "attach", None)
                if attach is not None:  # e.g. the toolbox's background calls (before recovery:
                    await attach(self)  # the runs it resumes are heard)
            if self.recover_mode != "off":
                await self.recover(resume=self.recover_mode == "resume")
        except BaseException as exc:  # a capability that cannot open: nothing left half-open
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg = self._tg
        assert tg is not None, "the runtime was not entered"
        registry = self.services.registry
        try:
            try:
                if exc_type is None and len(registry):
                    with anyio.move_on_after(self.drain_timeout) as self._draining:
                        while len(registry):
                            await registry.drivers()[0].done.wait()
            finally:  # even when the exit itself is cancelled: our task group must end here
                self._draining = None
                # Whatever still runs is abandoned, not cancelled: its journal stays resumable.
                with anyio.CancelScope(shield=True):  # abandoned runs stop at their next await
                    await self._runs.tasks.aclose()
                    if registry.unreleased:  # a last try, so the next process need not wait
                        await self._leases.release_pending()
                    detach = getattr(self.services.memory, "detach", None)
                    if detach is not None:  # memory is held by a task of our task group
                        await detach(self)
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
        finally:
            self._tg = None
            self.services.spawn = None
            self._runs.open = False
            self._runs.status_watch.close()
            self._runs.status_watch = StatusWatch(self.store, self.services.registry)
            with anyio.CancelScope(shield=True):
                await self.store.aclose()

    def stop_draining(self) -> None:
        """End the exit's drain now, or skip it if the exit has not begun (an operator's
        second Ctrl-C): runs still going stay resumable in their journals. Call it from
        the runtime's event loop (``loop.call_soon_threadsafe`` from a signal handler)."""
        self.drain_timeout = 0
        if self._draining is not None:
            self._draining.cancel()

    # -- graphs ----------------------------------------------------------------------

    def register(self, graph: CompiledGraph) -> None:
        """Make ``graph`` known so its runs can be resumed and recovered by name."""
        self.loader.register(graph)

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
        queue: str | None = None,
        priority: int = 0,
        delay: float | None = None,
        concurrency_key: str | None = None,
    ) -> RunHandle:
        """Start a run in the background; returns its handle once the start is durable.

        Starting is idempotent by ``run_id``: a second start with the id of an
        existing run returns that run's handle and starts nothing, if it asks the same
        (graph, input and thread); otherwise it raises RunExistsError.

        With ``queue``, the run is not driven here: it waits in that queue of the
        PostgreSQL store for a worker (``mainspring worker --queue ...``), best
        ``priority`` first, not before ``delay`` seconds from now, within the queue's
        limits (a ``concurrency_key`` names what its per-key limit counts). The handle
        waits on it from here all the same.
        """
        runs = self._runs
        placed = placement(self.store, queue, priority, delay, concurrency_key)
        run_id, driver = await runs.begin(
            graph, input, run_id, thread, durability, metadata, placement=placed
        )
        if placed is not None:
            return RunHandle(runs, run_id)  # a worker drives it
        if driver is not None:
            runs.spawn(driver)
        return RunHandle(runs, run_id, driver)

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
        runs = self._runs
        run_id, driver = await runs.drive_here(graph, input, run_id, thread, durability, metadata)
        if (
            driver is not None
            and driver.outcome is None
            and driver.fold.status is RunStatus.FINISHED
        ):
            return graph.schema.output(driver.fold.state)
        return await RunHandle(runs, run_id).result()

    async def run_outcome(
        self,
        graph: CompiledGraph,
        input: Any = None,
        *,
        run_id: str | None = None,
        thread: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> RunOutcome:
        """``run``, returning where the run stopped (``start(...)`` then ``wait()``), not
        its state: a parked run's outcome comes back at once. Driven in the calling task
        (no task to spawn, no wake-up to wait for); a cancelled caller leaves the run
        resumable, as ``run`` does."""
        runs = self._runs
        run_id, driver = await runs.drive_here(graph, input, run_id, thread, None, metadata)
        if driver is not None and driver.outcome is None and driver.existing is None:
            return outcome_of(driver.fold)
        return await RunHandle(runs, run_id).wait()

    # -- resuming, cancelling, recovering --------------------------------------------

    async def resume(
        self,
        run_id: str,
        value: Any = None,
        *,
        interrupt_id: str | None = None,
        values: dict[str, Any] | None = None,
        graph: CompiledGraph | None = None,
        actor: str | None = None,
    ) -> RunHandle:
        """Continue a parked run: the pending interrupt returns ``value`` in its node.

        With several pending interrupts, name one with ``interrupt_id`` or pass
        ``values={id: value, ...}``. A run left running by a crashed process is
        resumed from its journal (no value needed). ``actor`` names who answers (an
        approver), recorded in the ``resumed`` event for the audit trail.
        """
        driver = await resume_run(self._runs, run_id, value, interrupt_id, values, graph, actor)
        return RunHandle(self._runs, run_id, driver)

    async def cancel(self, run_id: str, *, actor: str | None = None) -> None:
        """Cancel a run: a live one is stopped, a parked one is ended in its journal.

        A parked run needs no graph: its journal gets a ``cancelled`` event, and so do
        its parked subgraph runs. ``actor`` names who cancels, recorded in that event.
        """
        await cancel_run(self._runs, run_id, actor)

    async def recover(self, *, resume: bool = True) -> list[RunRecord]:
        """Find runs a crashed process left running; resume those whose graph is known.

        Returns the runs found. Those that could not be resumed (unknown graph,
        or ``resume=False``) are kept in ``runtime.recoverable``.
        """
        found, self.recoverable = await recover_runs(self._runs, resume)
        return found

    def _will_recover(self, record: RunRecord) -> bool:
        """Whether this runtime's recovery will take the run over (it looks periodically)."""
        if record.queue is not None:
            return True  # its queue's workers take it (or take it over)
        return (
            self._tg is not None
            and self.recover_mode == "resume"
            and record.parent_run_id is None
            and all(r.run_id != record.run_id for r in self.recoverable)
        )

    # -- reading ---------------------------------------------------------------------

    async def outcome(self, run_id: str, graph: CompiledGraph | None = None) -> RunOutcome:
        """Where the run stands now, read from its journal."""
        return await self._runs.outcome(run_id, graph)

    def handle(self, run_id: str, *, tenant: str | None = None) -> RunHandle:
        """A handle on the run; with ``tenant``, one that checks on first use that the run
        is that tenant's (another tenant's run is not found, as a missing one)."""
        return RunHandle(self._runs, run_id, tenant=tenant)

    async def get_run(self, run_id: str) -> RunRecord:
        return await self._runs.record(run_id)

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
        tenant: str | None = None,
    ) -> list[RunRecord]:
        """Runs matching every filter given, newest first; ``tenant``: only that tenant's
        (``""``: the default tenant's), else every tenant's."""
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
                tenant=tenant,
            )
        )

    async def list_threads(
        self, *, limit: int = 100, tenant: str | None = None
    ) -> list[ThreadInfo]:
        """Threads, most recently updated first: ``tenant``'s, or every tenant's."""
        return await self.store.list_threads(limit=limit, tenant=tenant)

    async def events(self, run_id: str, *, after: int = 0, until: int | None = None) -> list[Event]:
        await self._runs.record(run_id)
        return await self.store.read(run_id, after=after, until=until)

    # -- time travel (timetravel.py) -------------------------------------------------

    async def state(
        self, run_id: str, *, at: int | None = None, graph: CompiledGraph | None = None
    ) -> StateView:
        """The run's state as of sequence number ``at`` (default: now)."""
        from .timetravel import state_at

        return await state_at(self._runs, run_id, at, graph)

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
        actor: str | None = None,
    ) -> RunHandle:
        """Start a new run whose journal is ``run_id``'s up to ``at``: time travel.

        Effects recorded before ``at`` are not repeated. Those the original run made
        after ``at`` are an explicit choice: ``effects="rerun"`` calls them again, with
        new idempotency keys (it is a new run); ``effects="reuse"`` answers each call
        the fork makes at the same place (step, task, effect, name) with the original's
        recorded result, and runs anything else. Without a choice, a fork that would
        repeat recorded side effects is refused with RunStateError. ``actor`` names who
        forks, recorded in the new run's ``forked_from``.
        """
        from .timetravel import fork_run

        new_id = await fork_run(
            self._runs,
            run_id,
            at,
            new_run_id=new_run_id,
            graph=graph,
            thread=thread,
            start=start,
            effects=effects,
            actor=actor,
        )
        return RunHandle(self._runs, new_id)

    async def replay(self, run_id: str, *, graph: CompiledGraph | None = None) -> ReplayReport:
        """Re-run a run against its recorded effects and report the first divergence."""
        from .timetravel import replay_run

        return await replay_run(self._runs, run_id, graph)
