"""The seams between the engine's parts: what one runtime gives its drivers, and the small
protocols by which a run's driver, a node's capabilities and the runtime know each other.

The engine's modules form layers that only import downwards::

    seams, registry, fold, gate     what the others share
    recorded                        what recorded effects give back (results, errors)
    journal                         a run's record: ordered, fenced, committed appends
    context, effects, nodes         a node's call and what it can do (they see the
                                    driver as ActiveRun)
    planner -> driver               a run's loop: plan a step, run its tasks, commit
    runs -> subgraph, takeover,     making, adopting and waiting on runs
      timetravel, handle
    leases -> runtime -> sync       the public facade

A driver reaches the runtime only through :class:`EngineServices`; a subgraph runner,
which itself makes drivers, is handed to drivers through it (``SubgraphRunner``), so
the driver never imports what sits above it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import msgspec
from anyio import CancelScope

from ..events import ErrorInfo, Event, EventData
from ..status import Durability, RunStatus
from ..store import Store
from .gate import Gate
from .registry import LiveRuns

if TYPE_CHECKING:
    from ..graph.compiled import CompiledGraph, NodeSpec
    from .fold import RunFold, TaskRecord


class Listener(Protocol):
    """Hears every event of every run as it is recorded (telemetry, live streams)."""

    def __call__(self, event: Event) -> None: ...


class CommitListener(Protocol):
    """Hears each batch of a run's events once its store has them, in order (live streams:
    an event only recorded may still be lost to a crash and its number reused, a committed
    one never). ``status`` is the run's new status if the commit changed it."""

    def __call__(self, run_id: str, events: Sequence[Event], status: RunStatus | None) -> None: ...


class AppendNow(Protocol):
    """A store's append that completes without waiting (the in-memory store's)."""

    def __call__(
        self,
        run_id: str,
        expected_seq: int,
        events: list[Event],
        *,
        status: RunStatus | None,
        error: str | None,
        fence: int | None,
    ) -> None: ...


class ActiveRun(Protocol):
    """A run being driven, as a node's capabilities (ctx, effects, subgraphs) see it."""

    run_id: str
    fold: RunFold
    app: CompiledGraph
    durability: Durability
    services: EngineServices
    oracle: ReplayOracle | None
    gate: Gate
    loop_thread: int
    nested: bool
    outcome: BaseException | None
    cancel_requested: bool
    abandoned: bool
    checks_values: bool
    step_scope: CancelScope | None  # the current step's, while its tasks run
    # A fork's effects answered from its origin's journal: (step, task, effect) -> record.
    reuse: dict[tuple[int, int, int], dict[str, Any]] | None

    @property
    def creation_pending(self) -> bool: ...
    @property
    def failed(self) -> bool: ...

    def record(self, data: EventData) -> Event: ...
    def broadcast(self, data: EventData) -> None: ...
    @property
    def watched(self) -> bool: ...
    async def commit(
        self, status: RunStatus | None = None, error: str | None = None, *, shield: bool = True
    ) -> None: ...
    def check_json(
        self, value: Any, what: str, revive: Callable[[Any], Any] | None = None
    ) -> None: ...
    async def ensure_lease(self) -> None: ...
    def lease_fresh(self) -> bool: ...
    def commit_now(self) -> bool: ...
    def record_late(
        self, where: dict[str, Any], result: Any, error: BaseException | None, seconds: float
    ) -> None: ...
    def stopping(self) -> bool: ...
    def fail(self, error: ErrorInfo) -> None: ...
    def stop(self, cause: BaseException) -> NoReturn: ...
    async def drive(self) -> None: ...
    async def end_cancelled(self, reason: str) -> None: ...

    @property
    def done(self) -> asyncio.Event: ...


class ReplayOracle(Protocol):
    """Answers a replayed run's effects, resumes and subgraphs from a recorded journal."""

    def effect(
        self, driver: ActiveRun, task: TaskRecord, index: int, name: str, fn: Callable[..., Any]
    ) -> Any: ...
    def resume_value(self, step: int, task: int, index: int) -> tuple[bool, Any]: ...
    def subgraph_update(self, step: int, task: int) -> tuple[bool, Any]: ...


class SubgraphRunner(Protocol):
    """Runs a subgraph node's child run inside its parent's task (``subgraph.py``)."""

    async def __call__(
        self, parent: ActiveRun, spec: NodeSpec, task: TaskRecord, state_in: Any
    ) -> Any: ...


async def _no_subgraphs(parent: ActiveRun, spec: NodeSpec, task: TaskRecord, state_in: Any) -> Any:
    raise RuntimeError("this runtime runs no subgraphs (no SubgraphRunner was given)")


class EngineServices(msgspec.Struct):
    """What one runtime gives every driver of its runs: settings, the gate, the registry."""

    store: Store
    owner: str  # the lease owner id of this runtime
    lease_ttl: float
    retry_for: float  # how long a transient store failure is retried
    release_timeout: float  # how long a driver waits to hand a lease back
    gate: Gate
    registry: LiveRuns[Any]
    check_json: bool  # values must round-trip through the journal (durable stores)
    revive: bool  # events come back from JSON: revive typed values
    snapshot_every: int
    listeners: list[Listener] = msgspec.field(default_factory=list)
    # Told of each commit to the runtime's store (a listener must not raise or await).
    committed: list[CommitListener] = msgspec.field(default_factory=list)
    subgraphs: SubgraphRunner = _no_subgraphs
    models: Any = None  # the model gateway (capabilities.ModelCapability), if the runtime has one
    tools: Any = None  # the toolbox (capabilities.ToolCapability), if the runtime has one
    memory: Any = None  # memory (capabilities.MemoryCapability), if the runtime has one
    # Start a task in the open runtime's task group (a listener may not await); None when
    # the runtime is closed. The task must catch its own errors.
    spawn: Callable[..., Any] | None = None
