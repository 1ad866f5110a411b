"""The runtime: drives runs from their journals."""

from .context import Context
from .handle import RunHandle
from .loader import load_graph
from .outcome import PendingInterrupt, RunOutcome
from .runtime import Runtime
from .sync import SyncRunHandle, SyncRuntime
from .timetravel import Divergence, ReplayReport, StateView

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
