"""The tool layer's errors: each says what happened and what the caller (or model) can do.

A tool error that reaches an agent's model goes back to it as a tool result (its
``for_model()`` text) it can correct, never an exception that kills the run. Every
class can be rebuilt from its message alone, so a resumed run raises the same type.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import MainspringError


class ToolError(MainspringError):
    """A tool call that gave no result."""

    def for_model(self) -> str:
        """What a model is told in the tool's result."""
        return f"error: {self}"


class UnknownToolError(ToolError, KeyError):
    """A tool name the toolbox does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ToolArgumentsError(ToolError):
    """The arguments do not fit the tool's schema; the message lists each problem."""

    @classmethod
    def of(cls, tool: str, problems: Sequence[Mapping[str, Any]]) -> ToolArgumentsError:
        listed = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())) or 'arguments'}: {e.get('msg', '')}"
            for e in problems
        )
        return cls(
            f"invalid arguments for tool {tool!r}: {listed}. Call it again with arguments "
            "that fit its schema"
        )

    def for_model(self) -> str:
        return f"error: {self}"


class ToolResultError(ToolError):
    """The tool returned a value that does not fit its declared return type."""


class ToolTimeoutError(ToolError, TimeoutError):
    """The tool did not finish within its timeout (the call was cancelled)."""


class ToolFailedError(ToolError):
    """The tool raised; the message names its error (retried first if declared retryable)."""


class CircuitOpenError(ToolError):
    """The tool's circuit breaker is open after repeated failures: not called."""


class RateLimitedToolError(ToolError):
    """The tool's rate or concurrency limit did not admit the call in time."""
