"""The sync facade: the async Runtime, driven from plain scripts through one blocking portal.

No second copy of the loop: every call crosses into the portal's event loop
and runs the async implementation there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack
from types import TracebackType
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from ..events import Event
from ..graph.compiled import CompiledGraph
from ..status import Durability, RunStatus
from ..store import RunRecord, ThreadInfo
from .handle import RunHandle
from .outcome import RunOutcome
from .runtime import Runtime
from .tenancy import TenantRuntime
from .timetravel import ForkEffects, ReplayReport, StateView

T = TypeVar("T")


class SyncRunHandle:
    def __init__(self, portal: BlockingPortal, handle: RunHandle) -> None:
        self._portal = portal
        self._handle = handle
        self.run_id = handle.run_id

    def __repr__(self) -> str:
        return f"<SyncRunHandle {self.run_id}>"

    def result(self) -> Any:
        return self._portal.call(self._handle.result)

    def wait(self) -> RunOutcome:
        return self._portal.call(self._handle.wait)

    def cancel(self, *, actor: str | None = None) -> None:
        self._portal.call(lambda: self._handle.cancel(actor=actor))

    def events(self, *, after: int = 0, deltas: bool = True) -> Iterator[Event]:
        iterator = self._handle.events(after=after, deltas=deltas)
        try:
            while True:
                try:
                    event: Event = self._portal.call(iterator.__anext__)
                except StopAsyncIteration:
                    return
                yield event
        finally:
            self._portal.call(iterator.aclose)


class _SyncCalls:
    """The calls on runs, through a portal, to a Runtime or to one tenant's view of it."""

    _api: Runtime | TenantRuntime

    def _call(self, fn: Callable[[], Any]) -> Any:
        raise NotImplementedError

    def _wrap(self, handle: RunHandle) -> SyncRunHandle:
        raise NotImplementedError

    # The signatures mirror Runtime's, so type checkers and editors see the same API.

    def start(
        self,
        graph: CompiledGraph,
        input: Any = None,
        *,
        run_id: str | None = None,
        thread: str | None = None,
        durability: Durability | str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> SyncRunHandle:
        rt = self._api
        return self._wrap(
            self._call(
                lambda: rt.start(
                    graph,
                    input,
                    run_id=run_id,
                    thread=thread,
                    durability=durability,
                    metadata=metadata,
                )
            )
        )

    def run(
        self,
        graph: CompiledGraph,
        input: Any = None,
        *,
        run_id: str | None = None,
        thread: str | None = None,
        durability: Durability | str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Any:
        rt = self._api
        return self._call(
            lambda: rt.run(
                graph, input, run_id=run_id, thread=thread, durability=durability, metadata=metadata
            )
        )

    def resume(
        self,
        run_id: str,
        value: Any = None,
        *,
        interrupt_id: str | None = None,
        values: dict[str, Any] | None = None,
        graph: CompiledGraph | None = None,
        actor: str | None = None,
    ) -> SyncRunHandle:
        rt = self._api
        return self._wrap(
            self._call(
                lambda: rt.resume(
                    run_id,
                    value,
                    interrupt_id=interrupt_id,
                    values=values,
                    graph=graph,
                    actor=actor,
                )
            )
        )

    def cancel(self, run_id: str, *, actor: str | None = None) -> None:
        self._call(lambda: self._api.cancel(run_id, actor=actor))

    def outcome(self, run_id: str, graph: CompiledGraph | None = None) -> RunOutcome:
        result: RunOutcome = self._call(lambda: self._api.outcome(run_id, graph))
        return result

    def handle(self, run_id: str) -> SyncRunHandle:
        return self._wrap(self._api.handle(run_id))

    def get_run(self, run_id: str) -> RunRecord:
        result: RunRecord = self._call(lambda: self._api.get_run(run_id))
        return result

    def fork(
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
    ) -> SyncRunHandle:
        rt = self._api
        return self._wrap(
            self._call(
                lambda: rt.fork(
                    run_id,
                    at,
                    new_run_id=new_run_id,
                    graph=graph,
                    thread=thread,
                    start=start,
                    effects=effects,
                    actor=actor,
                )
            )
        )

    def replay(self, run_id: str, *, graph: CompiledGraph | None = None) -> ReplayReport:
        result: ReplayReport = self._call(lambda: self._api.replay(run_id, graph=graph))
        return result

    def state(
        self, run_id: str, *, at: int | None = None, graph: CompiledGraph | None = None
    ) -> StateView:
        result: StateView = self._call(lambda: self._api.state(run_id, at=at, graph=graph))
        return result

    def list_runs(
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
        rt = self._api
        result: list[RunRecord] = self._call(
            lambda: rt.list_runs(
                status=status,
                graph=graph,
                thread=thread,
                limit=limit,
                offset=offset,
                created_after=created_after,
                created_before=created_before,
            )
        )
        return result

    def list_threads(self, *, limit: int = 100) -> list[ThreadInfo]:
        result: list[ThreadInfo] = self._call(lambda: self._api.list_threads(limit=limit))
        return result

    def events(self, run_id: str, *, after: int = 0, until: int | None = None) -> list[Event]:
        result: list[Event] = self._call(lambda: self._api.events(run_id, after=after, until=until))
        return result


class SyncRuntime(_SyncCalls):
    """``with SyncRuntime.open("sqlite:///agents.db") as rt: rt.run(app, {...})``."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._api = runtime
        self._stack = ExitStack()
        self._portal: BlockingPortal | None = None

    @classmethod
    def open(cls, url: str = "sqlite:///mainspring.db", **options: Any) -> SyncRuntime:
        return cls(Runtime.open(url, **options))

    def __enter__(self) -> SyncRuntime:
        portal = self._stack.enter_context(start_blocking_portal())
        self._portal = portal
        cm: AbstractContextManager[Runtime] = portal.wrap_async_context_manager(self._runtime)
        self._stack.enter_context(cm)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.__exit__(exc_type, exc, tb)
        self._portal = None

    @property
    def runtime(self) -> Runtime:
        return self._runtime

    def _call(self, fn: Callable[[], Any]) -> Any:
        if self._portal is None:
            raise RuntimeError("the runtime is not open; use 'with SyncRuntime.open(...) as rt'")
        return self._portal.call(fn)

    def _wrap(self, handle: RunHandle) -> SyncRunHandle:
        assert self._portal is not None
        return SyncRunHandle(self._portal, handle)

    def recover(self, *, resume: bool = True) -> list[RunRecord]:
        result: list[RunRecord] = self._call(lambda: self._runtime.recover(resume=resume))
        return result

    def tenant(self, tenant: str) -> SyncTenantRuntime:
        """``Runtime.tenant`` for scripts: every call scoped to ``tenant``."""
        return SyncTenantRuntime(self, self._runtime.tenant(tenant))


class SyncTenantRuntime(_SyncCalls):
    """One tenant's view of a SyncRuntime (``SyncRuntime.tenant(name)``): the same calls,
    each scoped as :class:`~mainspring.engine.tenancy.TenantRuntime` scopes them."""

    def __init__(self, parent: SyncRuntime, view: TenantRuntime) -> None:
        self._parent = parent
        self._api = view
        self.tenant = view.tenant

    def __repr__(self) -> str:
        return f"<SyncTenantRuntime {self.tenant!r}>"

    @property
    def runtime(self) -> TenantRuntime:
        """The async view the calls go to (``agent.run_sync`` runs agents through it)."""
        assert isinstance(self._api, TenantRuntime)
        return self._api

    def _call(self, fn: Callable[[], Any]) -> Any:
        return self._parent._call(fn)

    def _wrap(self, handle: RunHandle) -> SyncRunHandle:
        return self._parent._wrap(handle)
