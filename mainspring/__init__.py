"""Mainspring: a durable, journal-backed runtime for AI agents.

Every run is an append-only journal; state, resume, streaming and replay are
folds over it. Embedded by default (one SQLite file), same code on PostgreSQL.
"""

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .engine import Context, PendingInterrupt, RunHandle, RunOutcome, Runtime, load_graph
from .errors import (
    ConflictError,
    CorruptStoreError,
    EffectError,
    GraphError,
    LeaseLostError,
    MainspringError,
    NodeTimeoutError,
    NondeterminismError,
    NotAStoreError,
    RunCancelledError,
    RunExistsError,
    RunFailedError,
    RunNotFoundError,
    RunStateError,
    SchemaVersionError,
    SerializationError,
    StateError,
    StoreError,
    StoreUnavailableError,
    TenantError,
    TransientStoreError,
)
from .events import Event, EventKind
from .graph import END, START, CompiledGraph, Graph, Retry, Send
from .state import append, merge, replace
from .store import Durability, RunRecord, RunStatus, Store, ThreadInfo, store_from_url

if TYPE_CHECKING:
    from .agents import Agent
    from .client import AsyncClient, Client
    from .engine import (
        Divergence,
        ReplayReport,
        StateView,
        SyncRunHandle,
        SyncRuntime,
        SyncTenantRuntime,
        TenantRuntime,
    )
    from .memory import Memory
    from .models import Budget, Gateway, ModelError, ModelResponse, ModelSpec
    from .server import ServerConfig, create_app
    from .tools import Tool, Toolbox, ToolContext, tool
    from .worker import QueueConfig, Schedule, Worker

_LAZY = frozenset(
    {
        "Divergence",
        "ReplayReport",
        "StateView",
        "SyncRunHandle",
        "SyncRuntime",
        "SyncTenantRuntime",
        "TenantRuntime",
    }
)
# The model gateway loads when first named (it brings pydantic and the caches with it).
_MODELS = frozenset({"Budget", "Gateway", "ModelError", "ModelResponse", "ModelSpec"})
_TOOLS = frozenset({"Tool", "Toolbox", "ToolContext", "tool"})  # and "Agent": .agents
# The HTTP client and the server (their extras: client, server) load when first named.
_EDGES = {"AsyncClient": ".client", "Client": ".client", "ServerConfig": ".server",
          "create_app": ".server", "QueueConfig": ".worker", "Schedule": ".worker",
          "Worker": ".worker"}  # fmt: skip


if not TYPE_CHECKING:  # type checkers see the imports above, and catch misspelt names

    def __getattr__(name: str) -> Any:
        # The sync facade and time travel's types load when first named (engine/__init__).
        module = (
            ".engine" if name in _LAZY else ".models" if name in _MODELS
            else ".tools" if name in _TOOLS else ".agents" if name == "Agent"
            else ".memory" if name == "Memory" else _EDGES.get(name)
        )  # fmt: skip
        if module is not None:
            from importlib import import_module

            value = getattr(import_module(module, __name__), name)
            globals()[name] = value
            return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "END",
    "START",
    "Agent",
    "AsyncClient",
    "Budget",
    "Client",
    "CompiledGraph",
    "ConflictError",
    "Context",
    "CorruptStoreError",
    "Divergence",
    "Durability",
    "EffectError",
    "Event",
    "EventKind",
    "Gateway",
    "Graph",
    "GraphError",
    "LeaseLostError",
    "MainspringError",
    "Memory",
    "ModelError",
    "ModelResponse",
    "ModelSpec",
    "NodeTimeoutError",
    "NondeterminismError",
    "NotAStoreError",
    "PendingInterrupt",
    "QueueConfig",
    "ReplayReport",
    "Retry",
    "RunCancelledError",
    "RunExistsError",
    "RunFailedError",
    "RunHandle",
    "RunNotFoundError",
    "RunOutcome",
    "RunRecord",
    "RunStateError",
    "RunStatus",
    "Runtime",
    "Schedule",
    "SchemaVersionError",
    "Send",
    "SerializationError",
    "ServerConfig",
    "StateError",
    "StateView",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "SyncRunHandle",
    "SyncRuntime",
    "SyncTenantRuntime",
    "TenantError",
    "TenantRuntime",
    "ThreadInfo",
    "Tool",
    "ToolContext",
    "Toolbox",
    "TransientStoreError",
    "Worker",
    "__version__",
    "append",
    "create_app",
    "load_graph",
    "merge",
    "replace",
    "store_from_url",
    "tool",
]
