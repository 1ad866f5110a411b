"""The node making a tool call, for the effect's function (which takes only the arguments)."""

from __future__ import annotations

import contextvars

from ..engine.capabilities import NodeCalls

calling: contextvars.ContextVar[NodeCalls | None] = contextvars.ContextVar(
    "mainspring_tool_caller", default=None
)
