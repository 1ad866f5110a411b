"""A tenant's view of a runtime: ``rt.tenant("acme")``, every call scoped to one tenant.

A run belongs to the tenant its metadata names at start (``metadata["tenant"]``; none:
the default tenant ``""``), for ever: its forks and subgraph runs too. Through the view:

* every read or action on a run first reads the run's record *scoped by the tenant*
  (``Store.get_run(run_id, tenant=...)``): another tenant's run raises the very
  ``RunNotFoundError`` a missing run does, so its existence does not leak;
* lists (runs, threads) are the tenant's only, filtered by the store's index; a thread id
  is the tenant's own (``"t1"`` of acme and ``"t1"`` of globex are two conversations);
* starts are made as the tenant: the view stamps ``metadata["tenant"]``, and refuses
  metadata naming another tenant.

The Runtime itself is the admin view, seeing every tenant. The scope is an API
contract for code that serves a tenant's requests, not a sandbox against code running
in the same process (which holds the runtime, and so the store).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, Unpack

from ..errors import RunNotFoundError, TenantError
from ..events import Event
from ..graph.compiled import CompiledGraph
from ..status import Durability, RunStatus
from ..store import RunRecord, Store, ThreadInfo, tenant_of
from .handle import RunHandle
from .loader import GraphLoader
from .outcome import RunOutcome
from .queueing import QueueOptions
from .seams import EngineServices

if TYPE_CHECKING:
    from .timetravel import ForkEffects, ReplayReport, StateView


class AdminRuntime(Protocol):
    """What the view needs of the runtime it scopes (``Runtime``, seen without importing it)."""

    store: Store
    services: EngineServices
    loader: GraphLoader

    def register(self, graph: CompiledGraph) -> None: ...

    def handle(self, run_id: str, *, tenant: str | None = None) -> RunHandle: ...

    async def start(
        self,
        graph: CompiledGraph,
        input: Any = None,
        *,
        run_id: str | None = None,
        thread: str | None = None,
        durability: Durability | str | None = None,
        metadata: dict[str, Any] | None = None,
        **queued: Unpack[QueueOptions],
    ) -> RunHandle: ...

    async def run(
        self,
        graph: CompiledGraph,
        input: Any = None,
        *,
        run_id: str | None = None,
        thread: str | None = None,
        durability: Durability | str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Any: ...

    async def run_outcome(
        self,
        graph: CompiledGraph,
        input: Any = None,
        *,
        run_id: str | None = None,
        thread: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> RunOutcome: ...

    async def resume(
        self,
        run_id: str,
        value: Any = None,
        *,
        interrupt_id: str | None = None,
        values: dict[str, Any] | None = None,
        graph: CompiledGraph | None = None,
        actor: str | None = None,
    ) -> RunHandle: ...

    async def cancel(self, run_id: str, *, actor: str | None = None) -> None: ...

    async def outcome(self, run_id: str, graph: CompiledGraph | None = None) -> RunOutcome: ...

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
    ) -> list[RunRecord]: ...

    async def list_threads(
        self, *, limit: int = 100, tenant: str | None = None
    ) -> list[ThreadInfo]: ...

    async def state(
        self, run_id: str, *, at: int | None = None, graph: CompiledGraph | None = None
    ) -> StateView: ...

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
    ) -> RunHandle: ...

    async def replay(self, run_id: str, *, graph: CompiledGraph | None = None) -> ReplayReport: ...


class TenantRuntime:
    """One tenant's view of a runtime (``Runtime.tenant(name)``); see the module docstring.

    It offers the runtime's calls on runs, each scoped; it is not entered or closed
    (the runtime is), and any number of views share one runtime.
    """

    def __init__(self, runtime: AdminRuntime, tenant: str) -> None:
        if not isinstance(tenant, str):
            raise TenantError(
                f"a tenant is named by a string, not {tenant!r}; use rt.tenant('acme'), "
                "or rt.tenant('') for the default tenant"
            )
        self.runtime = runtime  # the admin view: every tenant's runs
        self.tenant = tenant

    def __repr__(self) -> str:
        return f"<TenantRuntime {self.tenant!r}>"

    # -- scope ---------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunRecord:
        """The run's record; RunNotFoundError if there is none *or it is another tenant's*."""
        record = await self.runtime.store.get_run(run_id, tenant=self.tenant)
        if record is None:
            raise RunNotFoundError(run_id)
        return record

    def stamp(self, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
        """``metadata`` of a run this view starts: the tenant's, whatever else it says."""
        if metadata and "tenant" in metadata and tenant_of(metadata) != self.tenant:
            raise TenantError(
                f"metadata['tenant'] is {metadata['tenant']!r}, but this view acts for tenant "
                f"{self.tenant!r}: a run starts as the view's tenant; drop the key, or use "
                "that tenant's view"
            )
        if not self.tenant:  # the default tenant: no key, as an unscoped start writes it
            return metadata
        return {**(metadata or {}), "tenant": self.tenant}

    # -- starting ------------------------------------------------------------------------

    async def start(
        self,
        graph: CompiledGraph,
        input: Any = None,
        *,
        run_id: str | None = None,
        thread: str | None = None,
        durability: Durability | str | None = None,
        metadata: dict[str, Any] | None = None,
        **queued: Unpack[QueueOptions],
    ) -> RunHandle:
        """``Runtime.start`` as this tenant (``queued``: its queue options). A ``run_id``
        another tenant's run holds is refused (RunExistsError) without a word about that run."""
        return await self.runtime.start(
            graph,
            input,
            run_id=run_id,
            thread=thread,
            durability=durability,
            metadata=self.stamp(metadata),
            **queued,
        )

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
        """``Runtime.run`` as this tenant."""
        return await self.runtime.run(
            graph,
            input,
            run_id=run_id,
            thread=thread,
            durability=durability,
            metadata=self.stamp(metadata),
        )

    async def run_outcome(
        self,
        graph: CompiledGraph,
        input: Any = None,
        *,
        run_id: str | None = None,
        thread: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> RunOutcome:
        """``Runtime.run_outcome`` as this tenant."""
        return await self.runtime.run_outcome(
            graph, input, run_id=run_id, thread=thread, metadata=self.stamp(metadata)
        )

    # -- acting on runs (each checks the run is the tenant's first) -----------------------

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
        await self.get_run(run_id)
        return await self.runtime.resume(
            run_id, value, interrupt_id=interrupt_id, values=values, graph=graph, actor=actor
        )

    async def cancel(self, run_id: str, *, actor: str | None = None) -> None:
        await self.get_run(run_id)
        await self.runtime.cancel(run_id, actor=actor)

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
        """``Runtime.fork`` of one of the tenant's runs; the fork is the tenant's too."""
        await self.get_run(run_id)
        return await self.runtime.fork(
            run_id,
            at,
            new_run_id=new_run_id,
            graph=graph,
            thread=thread,
            start=start,
            effects=effects,
            actor=actor,
        )

    def handle(self, run_id: str) -> RunHandle:
        """A handle on one of the tenant's runs, checked on its first use."""
        return self.runtime.handle(run_id, tenant=self.tenant)

    # -- reading -------------------------------------------------------------------------

    async def outcome(self, run_id: str, graph: CompiledGraph | None = None) -> RunOutcome:
        await self.get_run(run_id)
        return await self.runtime.outcome(run_id, graph)

    async def events(self, run_id: str, *, after: int = 0, until: int | None = None) -> list[Event]:
        await self.get_run(run_id)
        return await self.runtime.store.read(run_id, after=after, until=until)

    async def state(
        self, run_id: str, *, at: int | None = None, graph: CompiledGraph | None = None
    ) -> StateView:
        await self.get_run(run_id)
        return await self.runtime.state(run_id, at=at, graph=graph)

    async def replay(self, run_id: str, *, graph: CompiledGraph | None = None) -> ReplayReport:
        await self.get_run(run_id)
        return await self.runtime.replay(run_id, graph=graph)

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
        """The tenant's runs matching every filter given, newest first."""
        return await self.runtime.list_runs(
            status=status,
            graph=graph,
            thread=thread,
            limit=limit,
            offset=offset,
            created_after=created_after,
            created_before=created_before,
            tenant=self.tenant,
        )

    async def list_threads(self, *, limit: int = 100) -> list[ThreadInfo]:
        """The tenant's threads, most recently updated first."""
        return await self.runtime.list_threads(limit=limit, tenant=self.tenant)

    def live_runs(self) -> list[str]:
        """The ids of the tenant's runs this runtime drives right now."""
        registry = self.runtime.services.registry
        return [
            run_id
            for run_id in list(registry)
            if (driver := registry.get(run_id)) is not None
            and tenant_of(driver.fold.metadata) == self.tenant
        ]

    def register(self, graph: CompiledGraph) -> None:
        """Make ``graph`` known to the runtime (graphs are code, shared by every tenant)."""
        self.runtime.register(graph)
