"""What a tool call falls back on when its breaker is open or its limits refuse it.

``Tool(..., fallback=...)`` takes one of these, or a list tried in order until one
gives a result:

* a tool's name (or ``FallbackTool(name)``): that tool, called with the same arguments
  through the same toolbox (its own validation, limits and breaker); a chain that
  comes back to a tool already tried skips it;
* ``CachedResult(ttl=300)``: the last good result of this tool for the same arguments
  (and tenant), kept in memory by the toolbox's :class:`~.resilience.Resilience` for
  ``ttl`` seconds (only tools that declare it keep results);
* ``AskHuman(reason)``: raise :class:`~.errors.NeedsHuman`, which an agent loop turns
  into an approval (so it ends a chain).

When nothing in the chain answers, the original refusal (``CircuitOpenError`` or
``RateLimitedToolError``) is raised, saying what was tried.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias


@dataclass(frozen=True, slots=True)
class FallbackTool:
    """Call another tool of the same toolbox with the same arguments."""

    name: str


@dataclass(frozen=True, slots=True)
class CachedResult:
    """The last good result for the same arguments, if it is at most ``ttl`` s old."""

    ttl: float = 300.0

    def __post_init__(self) -> None:
        if self.ttl <= 0:
            raise ValueError(f"CachedResult(ttl={self.ttl}): use a positive number of seconds")


@dataclass(frozen=True, slots=True)
class AskHuman:
    """Raise ``NeedsHuman``: a person handles the call (an agent asks for an approval)."""

    reason: str = "the tool is unavailable"


Step: TypeAlias = FallbackTool | CachedResult | AskHuman
FallbackSpec: TypeAlias = str | Step | Sequence[str | Step] | None


def steps(tool: str, spec: Any) -> tuple[Step, ...]:
    """``spec`` as the chain to try (a clear error for anything else)."""
    if spec is None:
        return ()
    items = spec if isinstance(spec, Sequence) and not isinstance(spec, str) else [spec]
    chain: list[Step] = []
    for item in items:
        if isinstance(item, str):
            item = FallbackTool(item)
        if not isinstance(item, (FallbackTool, CachedResult, AskHuman)):
            raise TypeError(
                f"tool {tool!r}: fallback= takes a tool's name, FallbackTool, CachedResult, "
                f"AskHuman or a list of them, not {item!r}"
            )
        if isinstance(item, FallbackTool) and item.name == tool:
            raise ValueError(f"tool {tool!r} cannot fall back on itself")
        chain.append(item)
    return tuple(chain)


class ResultCache:
    """The last good result per (tool, tenant, arguments), in memory, at most
    ``max_entries`` of them (the least recently stored go first)."""

    def __init__(self, max_entries: int = 1024) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str, str], tuple[float, Any]] = OrderedDict()

    @staticmethod
    def key(tool: str, tenant: str | None, args: Mapping[str, Any]) -> tuple[str, str, str]:
        return tool, tenant or "", json.dumps(args, sort_keys=True, default=str)

    def put(self, key: tuple[str, str, str], value: Any) -> None:
        entries = self._entries
        entries[key] = (time.monotonic(), value)
        entries.move_to_end(key)
        if len(entries) > self.max_entries:
            entries.popitem(last=False)

    def get(self, key: tuple[str, str, str], ttl: float) -> tuple[bool, Any]:
        """(found, value): found only if stored at most ``ttl`` s ago."""
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[0] > ttl:
            return False, None
        return True, entry[1]
