"""The public surface is what we mean it to be: everything in __all__, nothing by accident."""

from __future__ import annotations

import mainspring

EXPECTED = {
    # authoring
    "Graph",
    "CompiledGraph",
    "START",
    "END",
    "Send",
    "Retry",
    "append",
    "merge",
    "replace",
    # running
    "Runtime",
    "SyncRuntime",
    "RunHandle",
    "SyncRunHandle",
    "TenantRuntime",
    "SyncTenantRuntime",
    "Context",
    "RunOutcome",
    "PendingInterrupt",
    "StateView",
    "ReplayReport",
    "Divergence",
    "load_graph",
    # models (mainspring.models has the rest)
    "Gateway",
    "ModelSpec",
    "ModelResponse",
    "Budget",
    "ModelError",
    # journal and stores
    "Event",
    "EventKind",
    "Store",
    "RunRecord",
    "RunStatus",
    "ThreadInfo",
    "Durability",
    "store_from_url",
    # errors
    "MainspringError",
    "GraphError",
    "StateError",
    "SerializationError",
    "StoreError",
    "NotAStoreError",
    "CorruptStoreError",
    "SchemaVersionError",
    "StoreUnavailableError",
    "ConflictError",
    "LeaseLostError",
    "TransientStoreError",
    "RunNotFoundError",
    "RunStateError",
    "RunExistsError",
    "RunFailedError",
    "RunCancelledError",
    "TenantError",
    "NodeTimeoutError",
    "NondeterminismError",
    "EffectError",
    "__version__",
    # tools and agents (mainspring.tools and mainspring.agents have the rest)
    "Agent",
    "Tool",
    "Toolbox",
    "ToolContext",
    "tool",
    # memory (mainspring.memory has the rest)
    "Memory",
    # the server and its client (mainspring.server and mainspring.client have the rest)
    "create_app",
    "ServerConfig",
    "Client",
    "AsyncClient",
    # scale-out workers (mainspring.worker has the rest)
    "Worker",
    "QueueConfig",
    "Schedule",
}


def test_public_names_are_exactly_the_curated_set() -> None:
    assert set(mainspring.__all__) == EXPECTED
    for name in mainspring.__all__:
        assert hasattr(mainspring, name), name


def test_every_error_derives_from_mainspring_error() -> None:
    errors = [getattr(mainspring, n) for n in mainspring.__all__ if n.endswith("Error")]
    assert all(issubclass(e, mainspring.MainspringError) for e in errors)
