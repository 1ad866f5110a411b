"""The sync facade: the async Runtime, driven from plain scripts through one blocking portal.

No second copy of the loop: every call crosses into the portal's event loop
and runs the async implementation there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from types import TracebackType
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from ..events import Event
from ..graph.compiled import CompiledGraph
from ..store.base import RunRecord, ThreadInfo
from .handle import RunHandle, RunOutcome
from .history import ReplayReport, StateView
from .runtime import Runtime

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

    def cancel(self) -> None:
        self._portal.call(self._handle.cancel)

    def events(self, *, after: int = 0) -> Iterator[Event]:
        iterator = self._handle.events(after=after)
        try:
            while True:
                try:
                    event: Event = self._portal.call(iterator.__anext__)
                except StopAsyncIteration:
                    return
                yield event
        finally:
            self._portal.call(iterator.aclose)


class SyncRuntime:
    """``with SyncRuntime.open("sqlite:///agents.db") as rt: rt.run(app, {...})``."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
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

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._portal is None:
            raise RuntimeError("the runtime is not open; use 'with SyncRuntime.open(...) as rt'")
        return self._portal.call(lambda: fn(*args, **kwargs))

    def _wrap(self, handle: RunHandle) -> SyncRunHandle:
        assert self._portal is not None
        return SyncRunHandle(self._portal, handle)

    def start(self, graph: CompiledGraph, input: Any = None, **options: Any) -> SyncRunHandle:
        return self._wrap(self._call(self._runtime.start, graph, input, **options))

    def run(self, graph: CompiledGraph, input: Any = None, **options: Any) -> Any:
        return self._call(self._runtime.run, graph, input, **options)

    def resume(self, run_id: str, value: Any = None, **options: Any) -> SyncRunHandle:
        return self._wrap(self._call(self._runtime.resume, run_id, value, **options))

    def cancel(self, run_id: str) -> None:
        self._call(self._runtime.cancel, run_id)

    def fork(self, run_id: str, at: int | None = None, **options: Any) -> SyncRunHandle:
        return self._wrap(self._call(self._runtime.fork, run_id, at, **options))

    def replay(self, run_id: str, **options: Any) -> ReplayReport:
        result: ReplayReport = self._call(self._runtime.replay, run_id, **options)
        return result

    def state(self, run_id: str, **options: Any) -> StateView:
        result: StateView = self._call(self._runtime.state, run_id, **options)
        return result

    def list_runs(self, **filters: Any) -> list[RunRecord]:
        result: list[RunRecord] = self._call(self._runtime.list_runs, **filters)
        return result

    def list_threads(self, **options: Any) -> list[ThreadInfo]:
        result: list[ThreadInfo] = self._call(self._runtime.list_threads, **options)
        return result

    def events(self, run_id: str, **options: Any) -> list[Event]:
        result: list[Event] = self._call(self._runtime.events, run_id, **options)
        return result
