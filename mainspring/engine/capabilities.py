"""What the engine knows of the capabilities a Runtime is built with: small protocols.

The engine never imports ``mainspring.models`` (or tools, memory, ...): a capability
is given to ``Runtime(models=...)``, its gate hooks join the runtime's gate, and
``ctx.model`` hands the call to it with the node's :class:`NodeCalls`, through which
the capability makes its journaled effect and streams deltas to live subscribers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from .effects import EffectCall

DeltaSink = Callable[..., None]  # fields of a ModelDelta (text=, tool_call=, partial=, restart=)


class NodeCalls(Protocol):
    """What a capability may do in a node (the node's Context is one)."""

    @property
    def run_id(self) -> str: ...
    @property
    def thread(self) -> str | None: ...
    @property
    def metadata(self) -> dict[str, Any]: ...

    def effect(self, call: EffectCall) -> Awaitable[Any]: ...  # awaited at once
    def delta_sink(self, name: str) -> DeltaSink | None: ...


class ModelCapability(Protocol):
    """A model gateway, as ``Runtime(models=...)`` takes it (``mainspring.models.Gateway``)."""

    @property
    def gate_hooks(self) -> Sequence[object]: ...

    async def call_in_run(
        self, node: NodeCalls, model: str, prompt: Any, options: Mapping[str, Any]
    ) -> Any: ...


class ToolCapability(Protocol):
    """A toolbox, as ``Runtime(tools=...)`` takes it (``mainspring.tools.Toolbox``)."""

    @property
    def gate_hooks(self) -> Sequence[object]: ...

    async def call_in_run(self, node: NodeCalls, name: str, args: Mapping[str, Any]) -> Any: ...


class MemoryCapability(Protocol):
    """Memory, as ``Runtime(memory=...)`` takes it (``mainspring.memory.Memory``)."""

    @property
    def gate_hooks(self) -> Sequence[object]: ...

    def in_run(self, node: NodeCalls) -> Any:
        """What ``ctx.memory`` gives the node: every read and write a journaled effect."""
        ...
