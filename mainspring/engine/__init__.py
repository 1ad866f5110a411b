"""The runtime: drives runs from their journals."""

from .context import Context
from .handle import PendingInterrupt, RunHandle, RunOutcome
from .history import Divergence, ReplayReport, StateView
from .runtime import Runtime, load_graph
from .sync import SyncRunHandle, SyncRuntime

__all__ = [
    "Context",
    "Divergence",
    "PendingInterrupt",
    "ReplayReport",
    "RunHandle",
    "RunOutcome",
    "Runtime",
    "StateView",
    "SyncRunHandle",
    "SyncRuntime",
    "load_graph",
]
