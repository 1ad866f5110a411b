"""What a command follows and names, locally or on a server: shared by ``_target`` and
``_remote`` (so that neither imports the other's module for its types)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from ..engine import RunOutcome
from ..events import Event
from ..graph import CompiledGraph

#: A graph as a command names it: imported already (local), or by name or ref (either).
GraphArg = CompiledGraph | str


class Handle(Protocol):
    """A run being followed: ``RunHandle`` locally."""

    @property
    def run_id(self) -> str: ...

    def events(self, *, after: int = 0, deltas: bool = True) -> AsyncIterator[Event]: ...

    async def wait(self) -> RunOutcome: ...
