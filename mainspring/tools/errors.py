"""The tool layer's errors: each says what happened and what the caller (or model) can do.

A tool error that reaches an agent's model goes back to it as a tool result (its
``for_model()`` text) it can correct, never an exception that kills the run. Every
class can be rebuilt from its message alone, so a resumed run raises the same type.
"""

from __future__ import annotations

import json
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


class MissingSecretError(ToolError):
    """A tool asked for a secret it did not declare, or that no source holds."""


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


class NeedsHuman(ToolError):
    """A person must act for this call: the tool's fallback when its breaker is open or
    its limits refuse is ``AskHuman()``. Not retried. An agent loop (or a node) turns it
    into an approval: ``interrupt(exc.payload())`` parks the run with the tool, its
    arguments and the reason, and the person's answer stands in for the tool's result.
    Rebuilt from its message alone (the arguments are in it), as a resumed run needs."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        head, sep, rest = message.partition(" needs a person: ")
        self.tool: str | None = head.removeprefix("tool ").strip("'") if sep else None
        reason, sep, args = rest.rpartition("; arguments: ")
        self.reason: str = reason if sep else rest
        try:
            parsed = json.loads(args) if sep else None
        except ValueError:
            parsed = None
        self.args_given: dict[str, Any] | None = parsed if isinstance(parsed, dict) else None

    @classmethod
    def of(cls, tool: str, args: Mapping[str, Any], reason: str) -> NeedsHuman:
        shown = json.dumps(dict(args), sort_keys=True, default=str)
        return cls(f"tool {tool!r} needs a person: {reason}; arguments: {shown}")

    def payload(self) -> dict[str, Any]:
        """What an approval shows: ``{"tool", "args", "reason"}``."""
        return {"tool": self.tool, "args": self.args_given, "reason": self.reason}

    def for_model(self) -> str:
        return f"error: {self.reason or self}; a person has been asked to handle this call"
