"""The runtime: drives runs from their journals."""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .context import Context
from .handle import RunHandle
from .loader import load_graph
from .outcome import PendingInterrupt, RunOutcome
from .runtime import Runtime

if TYPE_CHECKING:
    from .sync import SyncRunHandle, SyncRuntime, SyncTenantRuntime
    from .tenancy import TenantRuntime
    from .timetravel import Divergence, ReplayReport, StateView

# Loaded when first named: the sync facade imports anyio's thread portal (~10 ms) and
# time travel is for inspection; a process that only runs graphs needs neither.
_LAZY = {
    "SyncRunHandle": ".sync",
    "SyncRuntime": ".sync",
    "SyncTenantRuntime": ".sync",
    "TenantRuntime": ".tenancy",
    "Divergence": ".timetravel",
    "ReplayReport": ".timetravel",
    "StateView": ".timetravel",
}


if not TYPE_CHECKING:  # type checkers see the imports above, and catch misspelt names

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(import_module(module, __name__), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
    "SyncTenantRuntime",
    "TenantRuntime",
    "load_graph",
]
