"""How a tool call is bounded: a timeout always, retries on declared-retryable errors.

``Resilience.call(tool, args, context)`` is the one place a tool's function is called
(after the gate and argument validation). Every attempt keeps the call's idempotency
key. Rate and concurrency limits, the circuit breaker and fallbacks plug in here.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import anyio

from .errors import ToolError, ToolFailedError, ToolTimeoutError
from .tool import Tool, ToolContext


class Resilience:
    """The bounds every tool call runs under (one per toolbox)."""

    def __init__(self, *, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    async def call(self, tool: Tool, args: Mapping[str, Any], context: ToolContext) -> Any:
        return await self.attempts(tool, args, context)

    async def attempts(self, tool: Tool, args: Mapping[str, Any], context: ToolContext) -> Any:
        """The call, retried on the tool's declared-retryable errors with full jitter."""
        retry = tool.retry
        tries = retry.attempts if retry is not None else 1
        for attempt in range(1, tries + 1):
            ctx = context if attempt == 1 else _with_attempt(context, attempt)
            try:
                return await self.once(tool, args, ctx)
            except Exception as exc:
                if retry is None or attempt == tries or not isinstance(exc, retry.on):
                    if isinstance(exc, ToolError):
                        raise
                    raise ToolFailedError(
                        f"tool {tool.name!r} failed: {type(exc).__name__}: {exc}"
                    ) from exc
                ceiling = min(retry.max_backoff, retry.backoff * 2 ** (attempt - 1))
                await anyio.sleep(self._rng.uniform(0, ceiling))
        raise AssertionError("unreachable: the loop returns or raises")

    async def once(self, tool: Tool, args: Mapping[str, Any], context: ToolContext) -> Any:
        """One attempt under the tool's timeout."""
        if tool.timeout is None:
            return await tool.invoke(args, context)
        with anyio.move_on_after(tool.timeout) as scope:
            return await tool.invoke(args, context)
        if scope.cancelled_caught:
            raise ToolTimeoutError(
                f"tool {tool.name!r} did not finish within its timeout of {tool.timeout:g} s "
                "(cancelled); raise timeout= or make the tool faster"
            )
        raise AssertionError("unreachable")


def _with_attempt(context: ToolContext, attempt: int) -> ToolContext:
    from dataclasses import replace

    return replace(context, attempt=attempt)
